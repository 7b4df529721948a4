"""Sonic Face Loader and Sonic Config nodes."""
from __future__ import annotations

from sonic_core.config import MOUTH_PAINTERS

from . import _runtime as rt


def _doc(name: str, extra: str = "") -> str:
    return (rt.config_docs().get(name, "") + (" " + extra if extra else "")).strip()


class SonicTH_Config:
    DESCRIPTION = ("Settings shared by the Sonic Face Loader and Sonic Sampler: connect this one node to both, "
                   "so the face crop and the motion agree.")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = (rt.CONFIG,)
    RETURN_NAMES = ("config",)
    OUTPUT_TOOLTIPS = ("Sonic settings; connect to Sonic Face Loader and Sonic Sampler.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "min_resolution": rt.setting("min_resolution"),
            "expand_ratio": rt.setting("expand_ratio"),
            "inference_steps": rt.setting("inference_steps"),
            "dynamic_scale": rt.setting("dynamic_scale"),
            "motion_scale": rt.setting("motion_scale"),
            "seed": rt.setting("seed", control_after_generate=True),
            "output": rt.setting("output"),
            "blinks": rt.setting("blinks"),
        }, "optional": {
            "motion_model": rt.setting("motion_model", tooltip=_doc(
                "motion_model", "'loudness' is the fast fallback (mouth follows loudness only).")),
            "mouth_painter": rt.setting("mouth_painter"),
        }}

    @rt.user_errors
    def build(self, min_resolution, expand_ratio, inference_steps, dynamic_scale, motion_scale, seed,
              output="crop", blinks=True, motion_model="phonetic", mouth_painter=MOUTH_PAINTERS[0]):
        from .comfy_io import make_config

        return (make_config(min_resolution=min_resolution, expand_ratio=expand_ratio,
                            inference_steps=inference_steps, dynamic_scale=dynamic_scale,
                            motion_scale=motion_scale, seed=seed, output=output, blinks=blinks,
                            motion_model=motion_model, mouth_painter=mouth_painter),)


class SonicTH_FaceLoader:
    DESCRIPTION = ("Finds the face in a photo (Load Image), grows the box by expand_ratio and cuts the square "
                   "that will be animated. The preview shows the crop (green), the detection (yellow) and "
                   "the 468 landmarks (red).")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = (rt.FACE, "IMAGE")
    RETURN_NAMES = ("face", "preview")
    OUTPUT_TOOLTIPS = ("The face rig for Sonic Sampler / Render / Save MP4.",
                       "The photo with the crop box and landmarks drawn.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The portrait (first image of the batch is used). One clearly visible, "
                                           "roughly frontal face."}),
            "config": (rt.CONFIG, {"tooltip": "From Sonic Config: expand_ratio and min_resolution shape the crop."}),
        }, "optional": {
            "face_index": rt.setting("face_index"),
        }}

    @rt.user_errors
    def load(self, image, config, face_index=0):
        import dataclasses

        from .comfy_io import face_preview, prepare_face, rgb_to_image

        if image is not None and getattr(image, "ndim", 0) == 4 and image.shape[0] > 1:
            rt.log.info("Sonic Face Loader: the IMAGE batch has %d images; using the first", image.shape[0])
        cfg = dataclasses.replace(config, face_index=int(face_index))
        rig = prepare_face(image, cfg, rt.face_analyzer())
        d = rig.portrait.detection
        rt.log.info("Sonic Face Loader: face at %s (score %.2f), crop %s -> %dx%d", tuple(round(v) for v in d.box),
                    d.score, rig.portrait.crop_box, rig.crop.shape[1], rig.crop.shape[0])
        return (rig, rgb_to_image(face_preview(rig)))
