"""The ablation suite: variant registry, runner, tracking (MLflow) and tuning (Optuna)."""
