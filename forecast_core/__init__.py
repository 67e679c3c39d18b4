"""Framework-free core shared by training and serving: network, scaling, artifact, step."""
