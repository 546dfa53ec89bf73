#!/usr/bin/env bash
# Regenerate the shipped speech clips in av_localization_ros/sim/assets/ with espeak-ng.
#
# The clips are text-to-speech output that we generate ourselves from our own sentences with
# espeak-ng (the program itself is GPL-3.0 and is not shipped). They are the simulator's
# fallback speech source when no directory of real recordings is available
# (SpeechLibrary(directory=None)); see av_localization_ros/sim/assets/README.md.
#
# Needs: espeak-ng, sox (with FLAC support). Output: 16 kHz mono 16-bit FLAC, one per voice.
# The output is deterministic for a given espeak-ng version (1.51 was used for the shipped set).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../av_localization_ros/sim/assets}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

command -v espeak-ng >/dev/null || { echo "espeak-ng not found (apt-get install espeak-ng)" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox not found (apt-get install sox)" >&2; exit 1; }

# name|voice|words per minute|pitch (0-99)|sentence
clips=(
  "s01_en-us|en-us|170|50|The quick brown fox jumps over the lazy dog."
  "s02_en-f3|en+f3|165|60|Please bring the blue folder to the meeting."
  "s03_en-m3|en+m3|160|40|We should test the microphones in the hall."
  "s04_en-gb-f2|en-gb+f2|170|65|Where is the nearest train station, please?"
  "s05_en-us-m7|en-us+m7|160|35|Seven robots were waiting in the corridor."
  "s06_en-gb-rp-f4|en-gb-x-rp+f4|165|55|It will rain heavily tomorrow morning."
  "s07_en-scot-m1|en-gb-scotland+m1|165|45|We measured the room twice, and it still did not agree."
  "s08_en-us-f1|en-us+f1|175|70|Turn left at the second door, then go straight on."
)

for entry in "${clips[@]}"; do
  IFS='|' read -r name voice wpm pitch text <<<"$entry"
  espeak-ng -v "$voice" -s "$wpm" -p "$pitch" -w "$tmp/$name.wav" "$text"
  # espeak-ng writes 22050 Hz mono. sox: trim leading/trailing silence, resample to 16 kHz,
  # normalise to -6 dBFS peak, 16-bit FLAC at compression 8 without dither (-D; dither noise
  # would inflate the FLACs). The loader re-normalises levels anyway.
  sox -D "$tmp/$name.wav" -r 16000 -c 1 -b 16 -C 8 "$out/$name.flac" \
    silence 1 0.02 0.1% reverse silence 1 0.02 0.1% reverse rate -h norm -6
done
ls -l "$out"/*.flac
du -ch "$out"/*.flac | tail -1
