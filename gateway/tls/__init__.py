"""HTTPS on the public listener: certificate pairs, SNI selection, hot reload of the files."""
