"""rlvf's local lm-eval tasks: YAMLs for lm-eval's include path, their data and its builder."""
