"""Process variants for the benchmark: directories put first on a pair's ``PYTHONPATH``."""
