"""Scene simulator: shoebox rooms (pyroomacoustics image sources + diffuse late tail), talkers
on piecewise-linear paths with turn-taking speech, diffuse noise, a rendered camera and ground
truth. Entry points: ``make_scenario(kind, seed)`` -> ``SceneConfig`` and
``simulate_scene(cfg)`` -> ``SceneRecording``."""
from .scenarios import SCENARIO_KINDS, make_scenario
from .scene import (AudioComponents, SceneConfig, SceneConfigError, SceneRecording,
                    TalkerConfig, diffuse_noise, room_impulse_responses, simulate_audio,
                    simulate_scene, validate_config)
from .speech import SpeechLibrary, default_noise_dir, default_speech_dir

__all__ = [
    "SCENARIO_KINDS", "make_scenario", "AudioComponents", "SceneConfig", "SceneConfigError",
    "SceneRecording", "TalkerConfig", "diffuse_noise", "room_impulse_responses",
    "simulate_audio", "simulate_scene", "validate_config", "SpeechLibrary",
    "default_noise_dir", "default_speech_dir",
]
