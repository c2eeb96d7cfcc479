"""Built-in study specs (YAML files beside this module), found by name after install."""
