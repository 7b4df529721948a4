"""Sonic Audio PreData node."""
from __future__ import annotations

from sonic_core.config import MAX_DURATION_S

from . import _runtime as rt


class SonicTH_AudioPreData:
    DESCRIPTION = ("Analyses the speech (from Load Audio) per video frame. The video is as long as the audio "
                   "(rounded up to whole frames) unless duration is set; outputs the frame count and seconds.")
    CATEGORY = rt.CATEGORY
    RETURN_TYPES = (rt.SPEECH, "INT", "FLOAT")
    RETURN_NAMES = ("speech", "frames", "seconds")
    OUTPUT_TOOLTIPS = ("Speech features for Sonic Sampler.", "Number of video frames.", "Video length in seconds.")
    FUNCTION = "analyze"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The speech recording (Load Audio). Any length."}),
            "duration": rt.setting("duration", default=0.0, tooltip=(
                "Seconds of video. 0 = the whole audio (never shorter). A shorter value trims the audio, a longer "
                f"one pads it with silence. At most {MAX_DURATION_S / 3600:.0f} hours.")),
            "fps": rt.setting("fps"),
        }, "optional": {
            "speech_features": rt.setting("speech_features"),
            "speech_model": (rt.speech_model_choices(), {
                "default": "none",
                "tooltip": "Checkpoint in models/audio_encoders for speech_features wav2vec2/hubert: a single "
                           ".safetensors, or a Hugging Face folder's model.safetensors (its config.json and "
                           "vocab.json are read from the same folder). Visemes need a CTC fine-tune."}),
            "transcript": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "Optional: what is said (a TTS script, the lines), or the path of a .txt, .srt or .vtt "
                           "file (subtitle times bound each line). Its phones, aligned to the audio, drive the lips; "
                           "a transcript that does not match the audio is reported in the console and not used."}),
            "transcript_language": ("STRING", {
                "default": "en-us",
                "tooltip": "Language of the transcript as an espeak-ng voice name: en-us, en-gb, es, de, fr-fr, "
                           "cmn, ... (needs espeak-ng installed for any language other than English)."}),
            "audio_encoder_output": ("AUDIO_ENCODER_OUTPUT", {
                "tooltip": "Optional: core Audio Encoder Encode's output for this audio. It has no CTC head, so "
                           "its hidden states are attached as per-frame features and the built-in recogniser "
                           "still shapes the mouth."}),
        }}

    @rt.user_errors
    def analyze(self, audio, duration=0.0, fps=25.0, speech_features="builtin", speech_model="none",
                audio_encoder_output=None, transcript="", transcript_language="en-us"):
        from .comfy_io import prepare_speech

        sp = prepare_speech(audio, fps=fps, duration=duration or None, speech_features=speech_features,
                            speech_model=rt.speech_model_path(speech_model), encoder_output=audio_encoder_output,
                            device=rt.device(), transcript=transcript or None, transcript_language=transcript_language)
        rt.log.info("Sonic Audio PreData: %d frames, %.2f s at %g fps", sp.frames, sp.seconds, float(fps))
        return (sp, sp.frames, sp.seconds)
