"""Settings modules: ``base`` (development defaults, read from the environment),
``production`` (checked, no insecure defaults) and ``test`` (fast, isolated)."""
