"""Transcripts: subtitles parsing, forced alignment on a held-out voice, and refusing text that
does not belong to the audio (tests/lipsync_corpus.py: flite voices were never used for tuning)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from benchmarks.lipsync_motion import FPS, measure_track
from sonic_core.audio import transcript as tr
from sonic_core.errors import SonicInputError
from tests.lipsync_corpus import HELD_OUT_TEXT, make_clip
from tests.speech import require_espeak

pytest.importorskip("pocketsphinx")


def _flite():
    from tests.flite_timing import FLITE

    if FLITE is None:
        pytest.skip("flite is not installed (apt-get install flite): the held-out voice")


def _motion(clip, transcript=None, language="en-us"):
    from sonic_core.audio.features import frame_count
    from sonic_core.motion.phonetic import phonetic_motion

    return phonetic_motion(clip.samples, clip.rate, fps=FPS, num_frames=frame_count(clip.seconds, FPS),
                           transcript=transcript, transcript_language=language)


@pytest.fixture(scope="module")
def held_out_clip():
    require_espeak()
    _flite()
    parts = [(HELD_OUT_TEXT[3], 0.5), (HELD_OUT_TEXT[4], 0.0)]
    return make_clip("rms", parts, "flite:rms"), " ".join(t for t, _ in parts)


def test_subtitles_are_read_with_their_times(tmp_path):
    srt = tmp_path / "lines.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:02,250\n<i>Open the big</i> blue box.\n\n"
                   "2\n00:00:03,000 --> 00:00:04,100\nMy mother made fine wafers.\n", encoding="utf-8")
    vtt = tmp_path / "lines.vtt"
    vtt.write_text("WEBVTT\n\nintro\n00:00.500 --> 00:02.250\nOpen the big blue box.\n\n"
                   "00:01:03.000 --> 00:01:04.100 align:start\n<v Anna>My mother made fine wafers.\n", encoding="utf-8")
    a, b = tr.read_transcript(str(srt)), tr.read_transcript(str(vtt))
    assert [(c.text, c.start, c.end) for c in a] == [("Open the big blue box.", 0.5, 2.25),
                                                     ("My mother made fine wafers.", 3.0, 4.1)]
    assert [(c.start, c.end) for c in b] == [(0.5, 2.25), (63.0, 64.1)] and b[1].text == "My mother made fine wafers."
    assert tr.read_transcript("  Hello   there. ") == [tr.Cue("Hello there.")]
    with pytest.raises(SonicInputError, match="empty"):
        tr.read_transcript("   ")
    # No blank line between cues, annotations, a speaker label, a dialogue dash; a trailing newline on a path.
    messy = tmp_path / "messy.srt"
    messy.write_text("1\n00:00:01,000 --> 00:00:02,000\n[Music] ♪ Hello there\n2\n00:00:02,500 --> 00:00:03,000\n"
                     "JOHN: - General Kenobi (laughs)\n", encoding="utf-8")
    assert [(c.text, c.start) for c in tr.read_transcript(f"{messy}\n")] == [("Hello there", 1.0), ("General Kenobi", 2.5)]
    assert tr.read_transcript("~approximately ten people came") == [tr.Cue("~approximately ten people came")]
    with pytest.raises(SonicInputError, match="lines.txt' does not exist"):
        tr.read_transcript(str(tmp_path / "lines.txt"))
    from sonic_core.service.jobs import validate_settings

    with pytest.raises(SonicInputError, match="not a file path"):
        validate_settings({"transcript": "/etc/hostname.txt"})
    assert validate_settings({"transcript": "Hello there."})["transcript"] == "Hello there."


def test_transcript_aligns_a_held_out_voice(held_out_clip):
    """flite's rms voice: the aligned transcript's mouth follows the phone-timed truth closely,
    at least as well as the audio alone, with every p/b/m closed."""
    clip, text = held_out_clip
    with_text = _motion(clip, text)
    assert with_text.notes == []
    m = measure_track(with_text.jaw_open, clip)
    audio = measure_track(_motion(clip).jaw_open, clip)
    assert m["corr"] >= 0.8 and m["corr"] >= audio["corr"] - 0.02, (m, audio)
    assert abs(m["lag_ms"]) <= 20
    assert m["pbm"][0] == m["pbm"][1] > 0


@pytest.mark.parametrize("case", ["other words", "missing sentence", "wrong language"])
def test_mismatched_transcript_is_refused_with_a_message(held_out_clip, case):
    """Text that does not belong to the audio is not used: a note says why, and the mouth is the
    audio-only one (never mis-synced)."""
    clip, text = held_out_clip
    wrong, lang = {"other words": (" ".join(HELD_OUT_TEXT[10:12]), "en-us"),
                   "missing sentence": (HELD_OUT_TEXT[3], "en-us"),
                   "wrong language": ("Buenos días, me llamo Pablo y vivo en Madrid con mi familia.", "es")}[case]
    track = _motion(clip, wrong, lang)
    assert len(track.notes) == 1 and track.notes[0].startswith("transcript not used:"), track.notes
    np.testing.assert_array_equal(track.jaw_open, _motion(clip).jaw_open)


def test_cli_reports_a_refused_transcript_and_rejects_an_unknown_language(tmp_path):
    require_espeak()
    from tests.speech import synthesize

    wav = synthesize("Bring me the map, and come back by Monday.", tmp_path / "s.wav")
    base = [sys.executable, "-m", "sonic_core", "generate", "--image", "assets/grace_hopper.jpg", "--audio", wav,
            "--min-resolution", "128", "--device", "cpu", "-q"]
    bad = subprocess.run(base + ["--out", str(tmp_path / "a.mp4"), "--transcript", "hello", "--transcript-language",
                                 "xx-nolang"], capture_output=True, text=True)
    assert bad.returncode == 2 and "xx-nolang" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (tmp_path / "a.mp4").exists()
    wrong = subprocess.run(base + ["--out", str(tmp_path / "b.mp4"), "--transcript",
                                   "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."],
                           capture_output=True, text=True)
    assert wrong.returncode == 0, wrong.stderr
    assert "note: transcript not used:" in wrong.stderr and (tmp_path / "b.mp4").stat().st_size > 0


def test_held_out_voice_audio_only(held_out_clip):
    """The audio path alone on a voice never used for tuning or training (loose CI thresholds;
    benchmarks/lipsync_motion.py reports the full cross-voice table)."""
    clip, _ = held_out_clip
    m = measure_track(_motion(clip).jaw_open, clip)
    assert m["corr"] >= 0.75 and abs(m["lag_ms"]) <= 30, m
    assert m["pbm"][0] >= 0.75 * m["pbm"][1] and m["sil"] <= 0.05, m


def test_viseme_network_ships_and_refuses_foreign_files(tmp_path, caplog):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sonic_core.motion import viseme_net as vn

    model = vn.load()
    assert model is not None and sum(p.numel() for p in model.parameters()) < 500_000
    with safe_open(str(vn.WEIGHTS), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == vn.FORMAT and float(meta["validation_frame_accuracy"]) > 0.7
    # Frames depend on their +-0.3 s only: any split of a long clip into blocks gives the same posteriors.
    from tests.lipsync_corpus import TUNING_TEXT
    from sonic_core.audio.features import resample_mono

    clip = make_clip("long", [(t, 0.3) for t in TUNING_TEXT[:3]], "en-us")
    x = resample_mono(clip.samples, clip.rate, 16000)
    rec = vn.VisemeRecognizer(model)
    whole, blocks = rec.posteriors(x, block=10 ** 6), rec.posteriors(x, block=97)
    assert whole.shape == (int(np.ceil(len(x) / 160)), len(vn.CLASSES)) and np.abs(whole - blocks).max() < 1e-4
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "something-else"})
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with caplog.at_level("WARNING"):
        assert vn.load(foreign) is None and vn.load(broken) is None and vn.load(tmp_path / "missing.safetensors") is None
    assert caplog.text.count("cannot be used") == 2 and "missing" in caplog.text


def test_ipa_vowels_get_the_same_mouth_shape_on_both_paths():
    """A transcript's IPA (espeak-ng -> ARPAbet -> viseme) and a CTC model's IPA (speech_models)
    give every IPA vowel the same first mouth shape."""
    from sonic_core.audio.ipa import to_arpabet
    from sonic_core.motion.visemes import visemes_of_phone
    from sonic_core.speech_models.visemes import _IPA_VOWELS, ipa_to_visemes

    for v in _IPA_VOWELS:
        arp = to_arpabet(v)
        assert arp and visemes_of_phone(arp[0])[0] == ipa_to_visemes(v)[0], (v, arp)
    assert to_arpabet("ˈaːɪ̯") == ("AY",) and to_arpabet("t͡ʃ") == ("CH",) and to_arpabet("o\u200dʊ") == ("OW",)
