"""acs_core: run one adversarial-coreset experiment (train with a selector and an objective, evaluate, record)."""
__version__ = "0.1.0"
