"""A/B experiments: who gets which variant, what is measured, and the verdict."""
