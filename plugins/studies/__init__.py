"""Built-in studies: plan files (``*.toml``) registered by :mod:`plugins.studies.builtin`.

A study is written exactly as a third-party one: a TOML plan beside a module
whose ``register_studies`` hookimpl registers it. ``harness study list``
shows them; ``harness study run yang2024 --quick`` runs one.
"""
