"""Fixed facts about the 468-point FaceMesh topology that the rig needs.

Index lists follow MediaPipe's FaceMesh numbering (Apache-2.0 model); the mesh
triangles themselves come from the converted model cache (`models.load_face_topology`).
Contours run from one corner to the other so upper and lower halves pair up.
"""
from __future__ import annotations

# Lips: outer and inner contours, corner to corner (subject's right -> left).
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
MOUTH_CORNERS = (61, 291)
INNER_CORNERS = (78, 308)
UPPER_LIP_MID, LOWER_LIP_MID = 13, 14
CHIN = 152
NOSE_TIP = 1
FOREHEAD = 10

# Eyes: upper and lower lid contours, outer corner to inner corner.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
# The fold above each upper lid: moves part of the way when the lid closes.
RIGHT_LID_FOLD = (247, 30, 29, 27, 28, 56, 190)
LEFT_LID_FOLD = (467, 260, 259, 257, 258, 286, 414)
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
EYE_OUTER_CORNERS = (33, 263)
