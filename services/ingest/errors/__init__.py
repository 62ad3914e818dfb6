"""Client errors that name the field at fault, and the one map from exceptions to their API answers."""
