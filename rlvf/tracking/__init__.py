"""MLflow tracking: how rlvf runs are named, tagged and laid out (see `schema`)."""
