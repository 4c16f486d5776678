"""Settings: each one defined once (type, default, help, bounds, resume policy), and every command's
flags generated from those definitions."""
