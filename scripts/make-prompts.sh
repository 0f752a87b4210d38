#!/usr/bin/env bash
# Regenerates every prompt in prompts/ (the canonical list is prompts/README.md).
#
#   scripts/make-prompts.sh [OUT_DIR]        (default: prompts/ beside this script)
#
# Speech comes from flite's "slt" voice (espeak-ng if flite is missing), music
# and tones from sox's synth. Every file is written as 8 kHz mono 16-bit PCM
# WAV, speech trimmed of leading/trailing silence and normalised to -3 dBFS
# peak. Needs only Debian's flite (or espeak-ng) and sox. Re-runnable: files
# are overwritten; sox runs with -R (repeatable) and -D (no dither), so the
# same tool versions give byte-identical output.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../prompts}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

command -v sox >/dev/null || { echo "error: sox is required (apt-get install sox)" >&2; exit 1; }
if command -v flite >/dev/null; then
    tts=flite
elif command -v espeak-ng >/dev/null; then
    tts=espeak-ng
else
    echo "error: flite or espeak-ng is required (apt-get install flite)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Every sox run: repeatable, no dither.
SOX=(sox -R -D)
# The output format of every prompt.
FMT=(-r 8000 -c 1 -b 16 -e signed-integer)

echo "make-prompts: speech by $tts, output to $out"

# finish RAW NAME PEAK_DB — convert a synthesised float file to the output
# format, normalised to PEAK_DB. (Normalising in the same sox run as synth
# misjudges the peak, so synthesis and normalisation are two runs.)
finish() {
    "${SOX[@]}" "$1" "${FMT[@]}" "$out/$2.wav" norm "$3"
    printf '  %-22s %6.2f s  %s\n' "$2" "$(soxi -D "$out/$2.wav")" "$4"
}

# say NAME TEXT — speak TEXT into $out/NAME.wav.
say() {
    local name="$1" text="$2" raw="$work/$1.raw.wav"
    case "$tts" in
        flite) flite -voice slt -t "$text" -o "$raw" ;;
        espeak-ng) espeak-ng -v en-us -s 150 -w "$raw" "$text" ;;
    esac
    # Downmix, trim silence at both ends (the reverse trick trims the tail),
    # resample to 8 kHz with sox's very-high-quality linear-phase filter.
    "${SOX[@]}" "$raw" -r 8000 -c 1 -e floating-point -b 32 "$work/$name.8k.wav" \
        remix - \
        silence 1 0.01 -45d reverse silence 1 0.01 -45d reverse \
        rate -v -L 8000
    finish "$work/$name.8k.wav" "$name" -3 "\"$text\""
}

# English words for 0..60.
number_word() {
    local n=$1
    local ones=(zero one two three four five six seven eight nine ten eleven twelve
        thirteen fourteen fifteen sixteen seventeen eighteen nineteen)
    local tens=("" "" twenty thirty forty fifty sixty)
    if ((n < 20)); then
        echo "${ones[n]}"
    elif ((n % 10 == 0)); then
        echo "${tens[n / 10]}"
    else
        echo "${tens[n / 10]}-${ones[n % 10]}"
    fi
}

echo "speech:"
say welcome "Thank you for calling. Your call is important to us."
say ecbt_intro "Your estimated wait time is"
say ecbt_about "about"
say ecbt_more_than "more than"
for n in $(seq 0 60); do
    say "number_$n" "$(number_word "$n")"
done
say minute "minute"
say minutes "minutes"
say callback_offer "To receive a callback instead of waiting on hold, press 1. Or stay on the line."
say ani_offer "To be called back at the number you are calling from, press 1. To enter a different number, press 2."
say enter_number "Please enter your ten digit phone number, starting with the area code."
say invalid_number "That number is not valid."
say you_entered "You entered"
for n in $(seq 0 9); do
    say "digit_$n" "$(number_word "$n")"
done
say digit_star "star"
say digit_pound "pound"
say international_prefix "international"
say confirm "To confirm, press 1. To enter a different number, press 2."
say registered "Your callback has been scheduled. We will call you back in"
say registered_asap "Your callback has been scheduled. We will call you back as soon as possible."
say already_scheduled "You already have a callback scheduled. We will call you back as soon as possible."
say unable "We are unable to offer callbacks at this time."
say returning_to_queue "Returning you to the queue."
say agent_whisper "Callback for"
say missed_call_agent "Automatic callback of a missed call, for"
say customer_no_answer "The customer did not answer."
say recording_notice "This call may be recorded for quality purposes."
say goodbye "Thank you. Goodbye."

echo "tones and music:"

# Ringback, North American (ANSI T1.401): 440 Hz + 480 Hz, 2 s on, 4 s off.
# Each tone at about -19 dBm0 puts the sum's peak near -13 dBFS. 5 ms ramps
# keep the cadence click-free; one 6 s cycle, meant to be looped.
"${SOX[@]}" -n "${FMT[@]}" -e floating-point -b 32 "$work/ringback.wav" \
    synth 2 sine 440 sine mix 480 fade t 0.005 2 0.005 pad 0 4
finish "$work/ringback.wav" ringback -13 "(440+480 Hz, 2 s on, 4 s off)"

# Hold music: an original, gentle arpeggiated piece, eight 3 s bars (24 s) over
# I-vi-IV-V-I-vi-ii-V in C major, so the last bar leads back into the first.
# Every note and pad starts and ends at zero amplitude: the file loops without
# a click. Pitches are sox's "%n" = n semitones from A4 (440 Hz).
note_len=0.375
bars=(
    # pad chord (low)   | arpeggio, eight eighth-notes
    "-21 -17 -14        | -9 -5 -2 3 7 3 -2 -5"     # C
    "-24 -21 -17        | -12 -9 -5 0 3 0 -5 -9"    # Am
    "-28 -24 -21        | -16 -12 -9 -4 0 -4 -9 -12" # F
    "-26 -22 -19        | -14 -10 -7 -2 2 -2 -7 -10" # G
    "-21 -17 -14        | -9 -2 3 7 10 7 3 -2"      # C
    "-24 -21 -17        | -12 -5 0 3 7 3 0 -5"      # Am
    "-19 -16 -12        | -7 -4 0 5 8 5 0 -4"       # Dm
    "-26 -22 -19        | -14 -7 -2 2 5 2 -2 -10"   # G (leads home to C)
)
bar_files=()
for i in "${!bars[@]}"; do
    pad_notes="${bars[i]%%|*}"
    arp_notes="${bars[i]#*|}"
    note_files=()
    j=0
    for p in $arp_notes; do
        f="$work/bar${i}_note${j}.wav"
        # A soft bell-like tone: fundamental plus a quiet octave, quick attack,
        # long logarithmic decay to zero by the end of the note.
        "${SOX[@]}" -r 8000 -c 2 -n -c 1 -e floating-point -b 32 "$f" \
            synth "$note_len" sine "%$p" sine "%$((p + 12))" \
            remix 1v0.8,2v0.2 fade l 0.008 "$note_len" 0.33 vol 0.6
        note_files+=("$f")
        j=$((j + 1))
    done
    "${SOX[@]}" "${note_files[@]}" "$work/bar${i}_arp.wav"
    read -r a b c <<<"$pad_notes"
    # The pad sounds an octave above the table: handsets roll off below ~300 Hz.
    a=$((a + 12)) b=$((b + 12)) c=$((c + 12))
    "${SOX[@]}" -r 8000 -c 3 -n -c 1 -e floating-point -b 32 "$work/bar${i}_pad.wav" \
        synth 3 sine "%$a" sine "%$b" sine "%$c" \
        remix 1v0.34,2v0.33,3v0.33 fade h 0.6 3 0.9 vol 0.35
    "${SOX[@]}" -m "$work/bar${i}_arp.wav" "$work/bar${i}_pad.wav" "$work/bar${i}.wav"
    bar_files+=("$work/bar${i}.wav")
done
"${SOX[@]}" "${bar_files[@]}" "$work/hold_music.wav"
finish "$work/hold_music.wav" hold_music -6 "(synthesised, loops)"

count=$(find "$out" -maxdepth 1 -name '*.wav' | wc -l)
size=$(du -sh "$out" | cut -f1)
echo "make-prompts: $count WAV files in $out ($size)"
