"""FTN: Foreground-Guided Texture-Focused person re-identification (model, data, training, evaluation).

This package knows nothing of MLflow or Optuna; ``ablations/`` wires it to runs and tracking.
"""

__version__ = "0.1.0"
