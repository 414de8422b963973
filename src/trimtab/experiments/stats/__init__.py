"""The statistics engine: sufficient statistics in, effects with intervals and decisions out."""
