"""Image normalization: validate, fetch safely, decode, orient, resize, re-encode."""
