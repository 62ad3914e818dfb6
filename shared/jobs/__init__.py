"""A job's record and its life: the job store and the scripts that create, start, record and stop it."""
