#!/bin/sh
# Regenerates the small audio fixtures of the media crate's tests (Debian packages: espeak-ng, sox).
# All files are 8 kHz mono; speech comes from espeak-ng and is resampled and encoded by sox.
#   hello.wav     "Hello?" as a person answers the phone; 16-bit PCM (answering-machine test: human).
#   greeting.wav  a long voicemail greeting; G.711 mu-law WAV (answering-machine test: machine; DTMF talk-off).
#   talkoff.wav   a second voice reading digits and prose; G.711 A-law WAV (DTMF talk-off).
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

speak() { # voice, words per minute, text, output
    espeak-ng -v "$1" -s "$2" -w "$tmp/raw.wav" "$3"
    sox "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$tmp/pcm.wav" gain -n -3
    mv "$tmp/pcm.wav" "$4"
}

speak en-us 160 "Hello?" hello.wav

speak en-us 170 "Hi, you have reached the Miller family. We cannot come to the phone right now. \
Please leave a message after the tone." "$tmp/greeting.wav"
sox "$tmp/greeting.wav" -e u-law -b 8 greeting.wav

speak en+f3 180 "One two three four five six seven eight nine zero. Star and pound. \
Please hold while I check your account balance." "$tmp/talkoff.wav"
sox "$tmp/talkoff.wav" -e a-law -b 8 talkoff.wav
