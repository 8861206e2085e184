"""The use cases of aixiate-auth, one module each; built once in :mod:`aixiate_auth.state`."""
