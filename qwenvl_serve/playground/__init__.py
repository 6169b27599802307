"""The browser playground served at /playground."""
