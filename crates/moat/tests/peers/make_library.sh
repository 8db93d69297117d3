#!/usr/bin/env bash
# Generates the music library of the radio tests in DIR with ffmpeg: 36 tracks of 6 to
# 15 s, laid out Artist/Album/NN - Title.ext, by 4 artists on 6 albums of 6 tracks, two
# albums each in MP3 (libmp3lame, the cover embedded too), FLAC and Ogg Vorbis. Sine tones
# and seeded pink and brown noise, stereo at 44.1 kHz, tagged (title, artist, album artist,
# album, track number, genre, date), with a cover.jpg per album.
#
# The same files on every run with the same ffmpeg (bit-exact muxing, seeded noise); a few
# seconds. Does nothing if DIR/.complete exists; a run cut short is done again.
#
# Usage: make_library.sh DIR
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
dir="$1"
[[ -e "$dir/.complete" ]] && exit 0
ffmpeg="${FFMPEG:-ffmpeg}"
command -v "$ffmpeg" >/dev/null 2>&1 || { echo "make_library: ffmpeg is missing (apt-get install ffmpeg)" >&2; exit 2; }

mkdir -p "$dir"
# Built beside the library and moved in at the end; a name starting with a dot is one
# Supysonic's scanner skips.
work="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

ff() { "$ffmpeg" -hide_banner -loglevel error -nostdin -y "$@"; }
bitexact=(-fflags +bitexact -flags +bitexact)

# artist|album|year|genre|format|cover colour|sound|base frequency (Hz; for sine)
albums=(
  "Sine Quartet|Pure Tones|2019|Electronic|mp3|0x3060c0|sine|220"
  "Sine Quartet|Overtones|2021|Electronic|flac|0xc06030|sine|330"
  "The Noise Floor|Pink Room|2018|Ambient|ogg|0xe070a0|pink|0"
  "Brown Study|Low Rumble|2020|Ambient|mp3|0x704020|brown|0"
  "Aurélie Tonnerre|Chansons sinus|2017|Chanson|flac|0x208040|sine|261.63"
  "Aurélie Tonnerre|Été électrique|2022|Pop|ogg|0xd0c020|mixed|392"
)
titles=(
  "First Light" "Drift" "Quiet Hours" "Signal" "Undertow" "Last Call"
  "Morning" "Glass" "Echoes" "Static Bloom" "Harbour" "Slow Wave"
)

album_build() {
  local index="$1" spec="$2"
  local artist album year genre format colour sound base
  IFS='|' read -r artist album year genre format colour sound base <<<"$spec"
  local out="$work/$artist/$album"
  mkdir -p "$out"
  ff -f lavfi -i "color=c=$colour:s=300x300:d=1,drawbox=x=60:y=60:w=180:h=180:color=white@0.6:t=fill" \
    -frames:v 1 "${bitexact[@]}" -q:v 4 "$out/cover.jpg"
  local n
  for n in 1 2 3 4 5 6; do
    local i=$((index * 6 + n))
    local secs=$((6 + (i * 7) % 10))
    local title="${titles[$(((index * 5 + n) % ${#titles[@]}))]}"
    local source
    case "$sound" in
      sine) source="sine=f=$(awk "BEGIN{print $base * (1 + ($n - 1) / 4)}"):r=44100:d=$secs" ;;
      pink | brown) source="anoisesrc=c=$sound:seed=$i:a=0.25:r=44100:d=$secs" ;;
      mixed)
        if ((n % 2)); then source="sine=f=$(awk "BEGIN{print $base * $n / 2}"):r=44100:d=$secs"
        else source="anoisesrc=c=pink:seed=$i:a=0.2:r=44100:d=$secs"; fi ;;
    esac
    local file
    file="$out/$(printf '%02d' "$n") - $title.$format"
    local tags=(-metadata "title=$title" -metadata "artist=$artist" -metadata "album_artist=$artist"
      -metadata "album=$album" -metadata "track=$n/6" -metadata "genre=$genre" -metadata "date=$year")
    case "$format" in
      mp3)
        ff -f lavfi -i "$source" -i "$out/cover.jpg" -map 0:a -map 1:v -ac 2 \
          -c:a libmp3lame -b:a 128k -c:v copy -disposition:v attached_pic \
          -metadata:s:v "title=Album cover" -metadata:s:v "comment=Cover (front)" \
          -id3v2_version 3 "${tags[@]}" "${bitexact[@]}" "$file" ;;
      flac) ff -f lavfi -i "$source" -ac 2 -c:a flac "${tags[@]}" "${bitexact[@]}" "$file" ;;
      ogg) ff -f lavfi -i "$source" -ac 2 -c:a libvorbis -q:a 3 "${tags[@]}" "${bitexact[@]}" "$file" ;;
    esac
  done
}

# One album at a time per core.
jobs=()
for index in "${!albums[@]}"; do
  album_build "$index" "${albums[$index]}" &
  jobs+=($!)
  if ((${#jobs[@]} >= $(nproc))); then wait "${jobs[0]}"; jobs=("${jobs[@]:1}"); fi
done
for job in "${jobs[@]}"; do wait "$job"; done

for artist in "$work"/*/; do
  artist="$(basename "$artist")"
  rm -rf "${dir:?}/$artist"
  mv "$work/$artist" "$dir/$artist"
done
touch "$dir/.complete"
