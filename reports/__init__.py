"""Reports regenerated from the MLflow store: tables, figures and README pages (no training)."""
