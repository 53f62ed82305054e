#!/usr/bin/env bash
# Makes the demo prompts: real speech from espeak-ng, converted by sox to 8 kHz mono 16-bit PCM WAV,
# silence trimmed. Run once after editing the texts below and commit the WAV files:
#   apt-get install -y espeak-ng sox && ivr-scripts/prompts/make-prompts.sh
set -euo pipefail
cd "$(dirname "$0")"
command -v espeak-ng >/dev/null || { echo "espeak-ng is missing (apt-get install -y espeak-ng)" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox is missing (apt-get install -y sox)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() {
  local name="$1" text="$2"
  espeak-ng -v en-us -s 165 -w "$tmp/$name.wav" "$text"
  # Resample to the telephone rate, trim leading and trailing silence, keep a short tail.
  sox "$tmp/$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "$name.wav" \
    silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse pad 0 0.15
}

say welcome "Welcome to Example Telecom."
say closed "We are closed. Our hours are Monday to Friday, eight A M to eight P M."
say after-hours-menu "To leave a message, press 1. For the emergency line, press 9."
say leave-message "Please leave a message after the tone."
say main-menu "For sales, press 1. For support, press 2. For your account balance, press 3. For an operator, press 0."
say menu-repeat "To hear these options again, press star."
say welcome-key-customer "Thank you for being one of our key customers. We will put you through first."
say support-menu "For technical support, press 1. For billing, press 2."
say invalid "Sorry, that is not a valid choice."
say no-input "Sorry, I did not hear a choice."
say enter-account "Please enter your account number, then press hash."
say account-unknown "We could not find that account."
say balance-is "Your balance is"
say euros "euros."
say balance-unavailable "Sorry, your balance is not available right now."
say please-hold "Please hold for the next available agent."
say queue-position "You are number"
say queue-wait "Your estimated wait is"
say minutes "minutes."
say callback-offer "To be called back instead of waiting, press 1."
say callback-question "We will call you back on this number. To confirm, press 1. To keep waiting, press 2."
say callback-confirmed "Thank you. We will call you back. Goodbye."
say survey "Please rate our service from 1 to 5, where 5 is excellent."
say goodbye "Thank you for calling. Goodbye."
say emergency "Transferring you to the emergency line."
# The outbound campaigns' identification message (played when no agent is free for a person who answered).
say campaign-identification "This was Example Telecom. To stop our calls, call 0 800 1 2 3 4."

# Numbers for announcements and balances: 0-20, the tens, and "hundred".
words=(zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
  sixteen seventeen eighteen nineteen twenty)
for n in $(seq 0 20); do say "num-$n" "${words[$n]}"; done
for pair in 30:thirty 40:forty 50:fifty 60:sixty 70:seventy 80:eighty 90:ninety; do
  say "num-${pair%%:*}" "${pair#*:}"
done
say num-hundred "hundred"
say num-thousand "thousand"
say num-million "million"
say num-billion "billion"

# Music on hold (looped to a caller the agent put on hold): a soft arpeggio C-E-G-E, not speech.
notes=()
for f in 523.25 659.25 783.99 659.25; do
  sox -n -r 8000 -c 1 -b 16 -e signed-integer "$tmp/note-$f.wav" synth 0.5 sine "$f" vol 0.25 fade q 0.02 0.5 0.05
  notes+=("$tmp/note-$f.wav")
done
sox "${notes[@]}" hold-music.wav

# Simplified Chinese (Mandarin) recordings in zh-CN/: the same names where the meaning is the same,
# plus the units Chinese numbers need (see crates/ivr/src/numbers.rs).
say_zh() {
  local name="$1" text="$2"
  mkdir -p zh-CN
  espeak-ng -v cmn -s 150 -w "$tmp/zh-$name.wav" "$text"
  sox "$tmp/zh-$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "zh-CN/$name.wav" \
    silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse pad 0 0.15
}
zh_digits=(零 一 二 三 四 五 六 七 八 九 十)
for n in $(seq 0 10); do say_zh "num-$n" "${zh_digits[$n]}"; done
say_zh num-hundred "百"
say_zh num-thousand "千"
say_zh num-ten-thousand "万"
say_zh num-hundred-million "亿"
say_zh num-liang "两"
say_zh queue-position "您现在排在第"
say_zh queue-position-end "位"
say_zh queue-wait "预计等待时间约为"
say_zh minutes "分钟"
say_zh please-hold "请稍候，我们将尽快为您接通。"
say_zh callback-offer "如不想继续等待，请按一，我们将给您回电。"


# The demo's main path in Chinese (a caller presses 9 in the first menu), and the offer of each
# language spoken in that language.
say_zh main-menu "销售请按一，技术支持请按二，查询余额请按三，人工服务请按零。"
say_zh menu-repeat "重听请按星号键。"
say_zh invalid "对不起，您的选择无效。"
say_zh no-input "对不起，我没有听到您的选择。"
say_zh support-menu "技术支持请按一，账单问题请按二。"
say_zh enter-account "请输入您的账号，以井号键结束。"
say_zh account-unknown "找不到该账号。"
say_zh balance-is "您的余额是"
say_zh euros "欧元。"
say_zh balance-unavailable "对不起，暂时无法查询余额。"
say_zh callback-question "我们将回拨这个号码。确认请按一，继续等待请按二。"
say_zh callback-confirmed "谢谢，我们会给您回电。再见。"
say_zh survey "请为我们的服务打分，一到五分，五分为非常满意。"
say_zh goodbye "感谢您的来电，再见。"
say_zh welcome-key-customer "感谢您作为我们的重要客户，我们将优先为您接通。"
# The offer to switch is said in the language it offers: Chinese in the English menu, English in the
# Chinese one.
espeak-ng -v cmn -s 150 -w "$tmp/language-offer.wav" "中文服务请按九。"
sox "$tmp/language-offer.wav" -r 8000 -c 1 -b 16 -e signed-integer language-offer.wav \
  silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse pad 0 0.15
espeak-ng -v en-us -s 165 -w "$tmp/zh-language-offer.wav" "For English, press 9."
sox "$tmp/zh-language-offer.wav" -r 8000 -c 1 -b 16 -e signed-integer zh-CN/language-offer.wav \
  silence 1 0.05 0.5% reverse silence 1 0.05 0.5% reverse pad 0 0.15
