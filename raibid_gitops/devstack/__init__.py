"""The real local GitOps stack for development and integration tests.

Not part of the product's runtime: builds (``build.py``) and runs (``processes.py``)
Gitea, etcd + kube-apiserver, the Flux controllers, Redis and kustomize on loopback.
"""
