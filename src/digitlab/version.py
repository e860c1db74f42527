"""digitlab's version: one place, below every stage, so that run configs and exports can record it."""

__version__ = "0.1.0"
