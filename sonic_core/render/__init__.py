"""Mesh-warp renderer: rig, deformation, inverse warp, mouth interior, paste-back."""
