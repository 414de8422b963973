"""The operator console at /console: live loop, slots, experiments, bandits, visitors, config."""
