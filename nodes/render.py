"""Sonic Render (IMAGE frames + AUDIO + fps) and Sonic Save MP4 (streaming) nodes."""
from __future__ import annotations

import os

from . import _runtime as rt

WARN_IMAGE_BYTES = 8 << 30


def output_file(filename_prefix: str, width: int, height: int) -> tuple[str, str, str]:
    """(path, file name, subfolder) of a new MP4 in ComfyUI's output folder, never outside it."""
    import folder_paths

    out_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, width, height)
    file = f"{name}_{counter:05}_.mp4"
    path = os.path.join(folder, file)
    # Our own check, not only ComfyUI's: the video stays inside the output folder.
    root = os.path.realpath(out_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise rt.SonicNodeError(f"filename_prefix '{filename_prefix}' would write outside the output folder; "
                                "use a name (or sub/folder/name) inside it.")
    return path, file, subfolder


class SonicTH_Render:
    DESCRIPTION = ("Renders every frame as an IMAGE batch, with the AUDIO fitted to the video length and the fps, "
                   "for core Create Video -> Save Video or VHS Video Combine. The whole clip is held in RAM "
                   "(H x W x 12 bytes per frame): for long clips use Sonic Save MP4 instead.")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("Frames, float32 [N, H, W, 3] in 0..1.",
                       "The speech, trimmed/padded to exactly N / fps seconds.",
                       "Frames per second (connect to Create Video's fps).")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face": (rt.FACE, {"tooltip": "From Sonic Face Loader."}),
            "motion": (rt.MOTION, {"tooltip": "From Sonic Sampler or Sonic Postprocess."}),
        }}

    @rt.user_errors
    def render(self, face, motion):
        from .comfy_io import image_batch_bytes, render_image_batch

        need = image_batch_bytes(face, motion)
        if need > WARN_IMAGE_BYTES:
            rt.log.warning("Sonic Render: this clip needs %.1f GB of RAM as an IMAGE batch; "
                           "Sonic Save MP4 streams it to disk instead", need / 2**30)
        n = motion.track.num_frames
        images, audio, fps = render_image_batch(face, motion, rt.device(), rt.models_dir(), rt.chunk_hook(n))
        return (images, audio, fps)


class SonicTH_SaveMP4:
    DESCRIPTION = ("Renders and encodes chunk by chunk straight into an H.264 + AAC MP4 in the output folder "
                   "(memory does not grow with clip length: minutes of audio are fine) and shows it.")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved MP4.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "face": (rt.FACE, {"tooltip": "From Sonic Face Loader."}),
            "motion": (rt.MOTION, {"tooltip": "From Sonic Sampler or Sonic Postprocess."}),
            "filename_prefix": ("STRING", {"default": "sonic/Sonic",
                                           "tooltip": "File name prefix inside the output folder; a counter is "
                                                      "added (sonic/Sonic_00001_.mp4)."}),
            "crf": rt.setting("crf"),
            "preset": rt.setting("preset"),
        }, "optional": {
            "encoder": rt.setting("encoder"),
        }}

    @rt.user_errors
    def save(self, face, motion, filename_prefix="sonic/Sonic", crf=18, preset="auto", encoder="auto"):
        from .comfy_io import render_to_mp4

        size = motion.config.min_resolution
        path, file, subfolder = output_file(filename_prefix, size, size)
        n = motion.track.num_frames
        info = render_to_mp4(face, motion, path, rt.device(), rt.models_dir(), crf=crf, preset=preset,
                             on_chunk=rt.chunk_hook(n), encoder=encoder)
        rt.log.info("Sonic Save MP4: %s (%d frames, %.2f s, %dx%d)", path, info["frames"], info["seconds"],
                    info["width"], info["height"])
        return {"ui": {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)},
                "result": (path,)}
