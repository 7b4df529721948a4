"""Build the face-model bundle from a MediaPipe wheel, without installing or running MediaPipe.

The wheel is only opened as a zip archive: three .tflite files (Apache-2.0 weights) are
converted to float32 PyTorch tensors, and the FaceMesh tessellation is read from
`face_mesh_connections.py` with `ast.literal_eval` (never imported or executed).
"""
from __future__ import annotations

import ast
import collections
import json
import zipfile
from pathlib import Path

import numpy as np

from .tflite_graph import convert_tflite

# Bundle key prefix -> path inside the wheel.
TFLITE_MEMBERS = {
    "short_range": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "full_range": "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "landmark": "mediapipe/modules/face_landmark/face_landmark.tflite",
}
CONNECTIONS_MEMBER = "mediapipe/python/solutions/face_mesh_connections.py"
BUNDLE_FORMAT = "1"


def tessellation_triangles(connections_source: str) -> np.ndarray:
    """FaceMesh triangles [T, 3] from the FACEMESH_TESSELATION literal.

    The literal lists each mesh triangle as three consecutive directed edges
    (a,b),(b,c),(c,a); the frozenset would lose that order, so we read the list literal from
    the syntax tree. Each triplet is checked to be a closed 3-cycle (a 3-clique of the edge
    graph that is a real face: cliques that are not listed triangles are holes), and the
    orientation is checked to be consistent (no directed edge used twice). In MediaPipe's
    order the triangles run counter-clockwise on screen for a frontal face, i.e.
    cross(b - a, c - a) < 0 in x-right / y-down pixel coordinates; we keep that order.
    """
    edges = None
    for node in ast.parse(connections_source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "FACEMESH_TESSELATION"):
            call = node.value
            if not (isinstance(call, ast.Call) and call.args):
                raise ValueError("FACEMESH_TESSELATION is not a frozenset([...]) literal")
            edges = ast.literal_eval(call.args[0])
    if edges is None:
        raise ValueError("FACEMESH_TESSELATION not found in face_mesh_connections.py")
    if len(edges) % 3:
        raise ValueError("FACEMESH_TESSELATION is not a list of edge triplets")
    triangles = []
    for i in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[i:i + 3]
        if not (b == b2 and c == c2 and a == a2):
            raise ValueError(f"edges {edges[i:i + 3]} do not close a triangle")
        triangles.append((a, b, c))
    directed = collections.Counter((t[k], t[(k + 1) % 3]) for t in triangles for k in range(3))
    if max(directed.values()) > 1:
        raise ValueError("tessellation triangles are not consistently oriented")
    if len({frozenset(t) for t in triangles}) != len(triangles):
        raise ValueError("duplicate triangles in tessellation")
    return np.asarray(triangles, dtype=np.int32)


def build_bundle(wheel_path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and convert everything the face stage needs from a MediaPipe wheel.

    Returns safetensors-ready float32/int32 arrays and string metadata (graph specs as
    JSON, provenance and licence).
    """
    tensors: dict[str, np.ndarray] = {}
    metadata: dict[str, str] = {"format": BUNDLE_FORMAT, "license": "Apache-2.0",
                                "source_wheel": wheel_path.name}
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        missing = [m for m in [*TFLITE_MEMBERS.values(), CONNECTIONS_MEMBER] if m not in names]
        if missing:
            raise ValueError(f"{wheel_path.name} lacks {missing}; use mediapipe==0.10.21 (the models "
                             "were removed from wheels >= 0.10.32)")
        for prefix, member in TFLITE_MEMBERS.items():
            spec, consts = convert_tflite(wheel.read(member))
            metadata[f"graph.{prefix}"] = json.dumps(spec, separators=(",", ":"))
            for key, arr in consts.items():
                tensors[f"{prefix}/{key}"] = arr
        triangles = tessellation_triangles(wheel.read(CONNECTIONS_MEMBER).decode("utf-8"))
        tensors["facemesh_triangles"] = triangles
    metadata["num_triangles"] = str(len(triangles))
    return tensors, metadata
