"""Sonic Sampler and Sonic Postprocess nodes."""
from __future__ import annotations

from . import _runtime as rt


class SonicTH_Sampler:
    DESCRIPTION = "Turns the speech into per-frame motion (mouth, head, blinks, brows) with the config's scales and seed."
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = (rt.MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("Motion track (with its audio) for Sonic Postprocess, Render or Save MP4.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face": (rt.FACE, {"tooltip": "From Sonic Face Loader."}),
            "speech": (rt.SPEECH, {"tooltip": "From Sonic Audio PreData."}),
            "config": (rt.CONFIG, {"tooltip": "From Sonic Config (the same one the face loader uses)."}),
        }}

    @rt.user_errors
    def sample(self, face, speech, config):
        from .comfy_io import sample_motion

        return (sample_motion(face, speech, config),)


class SonicTH_Postprocess:
    DESCRIPTION = ("Lip alignment (shift the mouth against the sound by alignment_offset seconds) and zero-phase "
                   "motion smoothing (steadier head, closures kept).")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = (rt.MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The post-processed motion track.",)
    FUNCTION = "process"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "motion": (rt.MOTION, {"tooltip": "From Sonic Sampler."}),
            "lip_align": rt.setting("lip_align", tooltip="Apply alignment_offset to the mouth (off = offset ignored)."),
            "alignment_offset": rt.setting("alignment_offset", tooltip=(
                "Seconds the mouth moves later (+) or earlier (-) than the sound; fractional frames are "
                "interpolated. 0.03 is a typical correction when a player shows the mouth early.")),
            "smooth_motion": rt.setting("smooth_motion", tooltip=(
                "Zero-phase smoothing of head motion (60 ms) and a very light one on the mouth that keeps full "
                "closures; never delays.")),
        }, "optional": {
            "auto_align": ("BOOLEAN", {"default": False,
                                       "tooltip": "With lip_align: measure the mouth's lead or lag against the "
                                                  "speech loudness (cross-correlation, within 0.2 s) and cancel it; "
                                                  "alignment_offset is then applied on top."}),
        }}

    @rt.user_errors
    def process(self, motion, lip_align=True, alignment_offset=0.0, smooth_motion=True, auto_align=False):
        from .comfy_io import postprocess_motion

        return (postprocess_motion(motion, lip_align, alignment_offset, smooth_motion, auto_align),)
