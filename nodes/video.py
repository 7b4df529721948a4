"""Sonic Dub Video: a video of a person + new speech -> the video re-synced, saved as MP4."""
from __future__ import annotations

from . import _runtime as rt
from .render import output_file


def _video_source(video, images, video_fps: float, video_path: str):
    """(frames or path, fps or None) from whichever of the three video inputs is given."""
    given = [name for name, v in (("video", video), ("images", images), ("video_path", video_path)) if v is not None
             and not (isinstance(v, str) and not v.strip())]
    if len(given) != 1:
        raise rt.SonicNodeError("Connect one video: a VIDEO (core Load Video), an IMAGE batch with its video_fps "
                                "(VHS Load Video, Get Video Components), or a video_path; "
                                + (f"got {', '.join(given)}." if given else "none was given."))
    if video_path is not None and video_path.strip():
        return video_path.strip(), None
    if video is not None:
        source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
        if isinstance(source, str):  # a file: streamed, never held whole as an IMAGE batch
            return source, None
        parts = video.get_components()
        return parts.images, float(parts.frame_rate)
    if not video_fps or video_fps <= 0:
        raise rt.SonicNodeError("Frames given as an IMAGE batch need their video_fps (the rate they were loaded at; "
                                "VHS Load Video's video_info or Get Video Components' fps).")
    return images, float(video_fps)


class SonicTH_DubVideo:
    DESCRIPTION = ("Dubbing: re-syncs the person in a video to new speech and saves an MP4. Head motion, blinks, "
                   "the upper face and the background stay the video's; jaw and lips follow the audio, drawn from "
                   "the person's own mouths in the video. The output keeps the video's size and rate and lasts as "
                   "long as the audio (a shorter video plays forward and back). Frames without a face are kept.")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the saved MP4.",)
    OUTPUT_NODE = True
    FUNCTION = "dub"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The new speech (Load Audio). Any length."}),
            "filename_prefix": ("STRING", {"default": "sonic/SonicDub",
                                           "tooltip": "File name prefix inside the output folder."}),
            "mouth_source": rt.setting("mouth_source"),
            "dynamic_scale": rt.setting("dynamic_scale"),
            "face_index": rt.setting("face_index", tooltip="Which face to follow when several are in view: "
                                                           "0 = the largest in the first frame with a face."),
            "crf": rt.setting("crf"),
        }, "optional": {
            "video": ("VIDEO", {"tooltip": "Core Load Video's output (a file is read in chunks, not held in RAM)."}),
            "images": ("IMAGE", {"tooltip": "Or: the video's frames (VHS Load Video, Get Video Components) ..."}),
            "video_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                    "tooltip": "... and their frame rate (needed with images)."}),
            "video_path": ("STRING", {"default": "", "tooltip": "Or: the path of a video file on this machine."}),
            "output_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.01,
                              "tooltip": "Frame rate of the output; 0 = the video's own."}),
            "transcript": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": rt.config_docs().get("transcript", "")}),
            "transcript_language": ("STRING", {"default": "en-us",
                                               "tooltip": rt.config_docs().get("transcript_language", "")}),
            "mouth_painter": rt.setting("mouth_painter", tooltip="With mouth_source 'painter': "
                                        + rt.config_docs().get("mouth_painter", "")),
        }}

    @rt.user_errors
    def dub(self, audio, filename_prefix="sonic/SonicDub", mouth_source="auto", dynamic_scale=1.0, face_index=0,
            crf=18, video=None, images=None, video_fps=0.0, video_path="", output_fps=0.0, transcript="",
            transcript_language="en-us", mouth_painter="procedural"):
        from sonic_core.dub import dub

        from .comfy_io import audio_to_clip

        source, source_fps = _video_source(video, images, video_fps, video_path)
        path, file, subfolder = output_file(filename_prefix, 0, 0)
        progress = rt.chunk_hook(1)
        tracking = rt.chunk_hook(1)
        result = dub(source, audio_to_clip(audio), path, video_fps=source_fps, fps=output_fps or None, device=rt.device(),
                     model_dir=rt.models_dir(), progress=progress, tracking_progress=tracking,
                     analyzer=rt.face_analyzer(), mouth_source=mouth_source, dynamic_scale=dynamic_scale,
                     face_index=face_index, crf=crf, transcript=transcript or None,
                     transcript_language=transcript_language, mouth_painter=mouth_painter)
        for note in result.notes:
            rt.log.warning("Sonic Dub Video: %s", note)
        rt.log.info("Sonic Dub Video: %s", result.summary())
        return {"ui": {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
                       "animated": (True,)},
                "result": (path,)}
