print('none yet')
