//! Configuration: the TOML schema, its defaults and field-level validation.
