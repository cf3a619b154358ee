"""raibid-gitops: the config repository of raibid-ci, generated, changed by commits and reconciled by Flux.

Kept import-light on purpose: ``raibid --help`` must not pull in pydantic, kubernetes or git.
"""

__version__ = "0.1.0"
