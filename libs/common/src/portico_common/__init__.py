"""Plumbing shared by Portico's gateway and services: nothing here knows users or credentials."""
