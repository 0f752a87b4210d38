//! The caller's callback registration flow: a pure state machine.
//!
//! No clock, no IO: every input carries the `now` at which it happened (a
//! digit's arrival time, the moment playback ended), timers are deadlines
//! read with [`Flow::poll_timeout`], and everything the engine must do comes
//! out of [`Flow::poll_action`]. Drain `poll_action` after every `handle*`.
//! Dropping a `Flow` at any point (the caller hung up) needs nothing: it owns
//! no resource, and the only durable effect, [`Action::Register`], is the
//! engine's own transaction.
//!
//! ```text
//!  new(now) --> Idle (keys kept until Start)
//!                |
//!                | Start { offer_callbacks, announce_ecbt, ecbt }
//!                +-- offer_callbacks = false --> Closing: "welcome" "unable"
//!                v
//!  +------> Holding: "welcome" [ECBT] ["callback_offer"], then Hold music.
//!  |          Before offer_at: no offer, '1' ignored; at offer_at: "callback_offer".
//!  |          Every announce_interval: RequestEcbt --Ecbt--> [ECBT] ["callback_offer"].
//!  |          |
//!  |          | '1' (offer open)
//!  |          +-- ANI valid --> AniOffer: "ani_offer"
//!  |          |                   | '1' ----------------------------------> Registering
//!  |          |                   | '2' / '0','3'..'9' (first digit) / no choice x3 --+
//!  |          v                                                                      |
//!  |        Collecting: "enter_number" <---------------------------------------------+
//!  |          '*' clears; the entry ends on '#', the 10th digit of a national
//!  |          entry, the 18th of an 011 entry, or the first/inter-digit timeout
//!  |          | validate
//!  |          +-- invalid, tries < max: "invalid_number" "enter_number" --> Collecting
//!  |          +-- invalid, tries = max --> Returning: "invalid_number" "returning_to_queue"
//!  |          |                               | done
//!  +----------|-------------------------------+ ReturnToQueue [RequestEcbt] Hold
//!             | valid
//!             v
//!           Confirming: "you_entered" ["international_prefix"] digit_N... "confirm"
//!             | '2' / no choice x3 --> Collecting
//!             | '1'
//!             v
//!           Registering: Register --RegistrationDone-->
//!           Closing: Registered        "registered" "about" N "minutes" "goodbye"
//!                                      (no ECBT quoted: "registered_asap" "goodbye")
//!                    AlreadyScheduled  "already_scheduled" "goodbye"
//!                    Failed            "unable" "goodbye"
//!             | done
//!             v
//!           Hangup --> Ended
//! ```
//!
//! Barge-in and type-ahead: in a step that uses digits (Holding once the
//! offer is open, AniOffer, Collecting, Confirming) a digit the step uses
//! stops whatever plays ([`Action::StopPlayback`]) and is processed at once,
//! so digits typed ahead ("1" and the whole number during the greeting) are
//! kept in order. A digit the step does not use (a '5' at the "press 1"
//! offer, '*' at a menu) is dropped and does not interrupt. The closing
//! prompts ("registered", "already_scheduled", "unable", "goodbye") and the
//! third-strike "returning_to_queue" are not interruptible; digits keyed
//! during them, or while the registration commits, are dropped.
//!
//! Choices where the issue is silent:
//! - A first-digit or inter-digit timeout ends the entry, which is then
//!   validated like any other: an empty or short entry is an invalid try
//!   (an 011 entry normally ends this way or with '#').
//! - '*' clears the buffer without replaying "enter_number"; the first-digit
//!   wait starts again from the '*'.
//! - '1' at "ani_offer" registers the ANI without a read-back: the caller
//!   chose "the number you are calling from".
//! - No choice at a menu: "ani_offer" and "confirm" are replayed twice
//!   (the wait is `first_digit_timeout` after each); then the flow asks
//!   for the number ("enter_number"). Neither counts as an invalid entry,
//!   nor does '2' at "confirm".
//! - Tries are counted per registration attempt: after "returning to the
//!   queue" a new '1' gets `max_invalid` fresh tries.
//! - After the return the ECBT for the restored position is requested at
//!   once and announced with the offer; hold music meanwhile.

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use crate::domain::number::{self, InvalidNumber, NumberPolicy, PhoneNumber};
use crate::ivr::Ecbt;

/// How the flow behaves; the lead maps the configuration into it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSettings {
    /// How long to wait for the first digit (or a menu choice) once the
    /// prompt asking for it has finished.
    pub first_digit_timeout: Duration,
    /// How long to wait for the next digit after one arrived.
    pub inter_digit_timeout: Duration,
    /// Invalid entries (timeouts included) before the caller is returned to
    /// the queue. 0 is taken as 1.
    pub max_invalid: u32,
    /// The queue's `offer_after`: how long after [`Flow::new`] the callback
    /// offer opens. Until then the caller hears hold music and '1' does
    /// nothing.
    pub offer_after: Duration,
    /// How often the ECBT is re-announced (and the offer repeated) while the
    /// caller holds. Zero disables the periodic announcement.
    pub announce_interval: Duration,
    /// Which numbers may be registered.
    pub policy: NumberPolicy,
    /// Say "international" in place of the `011` when reading back an
    /// international number; otherwise read "zero one one".
    pub spoken_international_prefix: bool,
}

impl Default for FlowSettings {
    /// The shipped configuration.
    fn default() -> Self {
        Self {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_invalid: 3,
            offer_after: Duration::ZERO,
            announce_interval: Duration::from_secs(60),
            policy: NumberPolicy::default(),
            spoken_international_prefix: true,
        }
    }
}

/// What the flow knows about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The caller's number as presented (From user part), if any.
    pub ani: Option<String>,
    /// The number the caller dialled.
    pub called: String,
}

/// One item of an [`Action::Play`] list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// A prompt file by its canonical name (`prompts/<name>.wav`).
    Named(&'static str),
    /// Hold music, looped until replaced or stopped; always last in a list.
    Hold,
}

/// Something that happened to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The engine's decisions for this call; the first input the flow acts on.
    Start {
        /// The gates are open (registration enabled, within business hours).
        offer_callbacks: bool,
        /// Announce the ECBT (false while the launch switch is off). When
        /// false no estimate is spoken at all, not even after "registered"
        /// (which is then followed by "goodbye" directly), and no
        /// [`Action::RequestEcbt`] is emitted.
        announce_ecbt: bool,
        /// The estimate for this caller now.
        ecbt: Ecbt,
    },
    /// The most recent [`Action::Play`] ran to its end (media is idle). Never
    /// sent for a playback ended by [`Action::StopPlayback`] or replaced by a
    /// newer `Play`; a list ending in [`Prompt::Hold`] never ends.
    PlaybackDone,
    /// A DTMF key, `'0'..='9'`, `'*'` or `'#'`, de-duplicated across RFC 4733,
    /// SIP INFO and in-band detection. Anything else is ignored.
    Digit(char),
    /// A fresh estimate, the answer to [`Action::RequestEcbt`].
    Ecbt(Ecbt),
    /// The answer to [`Action::Register`].
    RegistrationDone(RegistrationOutcome),
}

/// How the durable commit of a registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationOutcome {
    /// Committed to the store.
    Registered,
    /// A pending callback for this number in this queue already exists; no
    /// row was written.
    AlreadyScheduled,
    /// The store failed; nothing was written.
    Failed,
}

/// What the engine must do for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these in order, replacing the current playback. A
    /// [`Prompt::Hold`] item loops and is always last.
    Play(Vec<Prompt>),
    /// Stop the current playback (barge-in); no `PlaybackDone` follows.
    StopPlayback,
    /// Compute the caller's ECBT now and feed it back as [`Input::Ecbt`].
    RequestEcbt,
    /// Store the callback durably; answer with [`Input::RegistrationDone`].
    Register {
        /// The validated number to call back.
        number: PhoneNumber,
    },
    /// The caller stays in line at the original position (its queue entry
    /// time), after the last invalid entry.
    ReturnToQueue,
    /// End the call (BYE); the last prompt has finished.
    Hangup,
}

/// The registration flow of one inbound call (see the module docs for the
/// chart).
#[derive(Debug)]
pub struct Flow {
    state: State,
    settings: FlowSettings,
    call: CallInfo,
    /// The ANI as a number the policy accepts, offered at [`State::AniOffer`].
    ani_number: Option<PhoneNumber>,
    /// When the callback offer opens: `new`'s `now` + `offer_after`.
    offer_at: Instant,
    /// "callback_offer" has been played since the offer opened.
    offer_announced: bool,
    announce_ecbt: bool,
    /// The latest estimate (from Start or an Ecbt input).
    ecbt: Option<Ecbt>,
    /// Invalid entries in the current registration attempt.
    invalid: u32,
    last_rejection: Option<InvalidNumber>,
    /// Digits that arrived before Start, with their arrival times.
    early: Vec<(Key, Instant)>,
    actions: VecDeque<Action>,
}

impl Flow {
    /// A flow for a call answered at `now`. Nothing is played until
    /// [`Input::Start`].
    pub fn new(now: Instant, settings: FlowSettings, call: CallInfo) -> Self {
        let ani_number = call
            .ani
            .as_deref()
            .and_then(|ani| number::national_from_ani(ani, &settings.policy));
        let offer_at = now.checked_add(settings.offer_after).unwrap_or(now);
        Self {
            state: State::Idle,
            settings,
            call,
            ani_number,
            offer_at,
            offer_announced: false,
            announce_ecbt: false,
            ecbt: None,
            invalid: 0,
            last_rejection: None,
            early: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// Feeds one input that happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        let event = match input {
            Input::Start {
                offer_callbacks,
                announce_ecbt,
                ecbt,
            } => Event::Start {
                offer_callbacks,
                announce_ecbt,
                ecbt,
            },
            Input::PlaybackDone => Event::PlaybackDone,
            Input::Digit(c) => match Key::parse(c) {
                Some(key) => Event::Key(key),
                None => return,
            },
            Input::Ecbt(ecbt) => Event::Ecbt(ecbt),
            Input::RegistrationDone(outcome) => Event::RegistrationDone(outcome),
        };
        let state = mem::replace(&mut self.state, State::Ended);
        self.state = self.step(now, state, event);
        // Type-ahead from before Start, replayed at its arrival times.
        if !matches!(self.state, State::Idle) && !self.early.is_empty() {
            for (key, at) in mem::take(&mut self.early) {
                let state = mem::replace(&mut self.state, State::Ended);
                self.state = self.step(at, state, Event::Key(key));
            }
        }
    }

    /// The next thing the engine must do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Flow::handle_timeout`] is next due, if a timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Holding {
                speaking: false,
                next_announce,
                ..
            } => {
                let offer = (!self.offer_announced).then_some(self.offer_at);
                [*next_announce, offer].into_iter().flatten().min()
            }
            State::AniOffer { menu, .. } | State::Confirming { menu, .. } => menu.deadline,
            State::Collecting { deadline, .. } => *deadline,
            State::Idle
            | State::Holding { speaking: true, .. }
            | State::Registering
            | State::Returning
            | State::Closing
            | State::Ended => None,
        }
    }

    /// Runs the timers due at `now`; early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let state = mem::replace(&mut self.state, State::Ended);
        self.state = match state {
            State::Holding {
                speaking: false,
                ecbt_requested,
                next_announce,
            } => self.hold_tick(now, true, ecbt_requested, next_announce),
            State::AniOffer { number, menu } if menu.due(now) => {
                if menu.replays < MENU_REPLAYS {
                    self.play(vec![named("ani_offer")]);
                    State::AniOffer {
                        number,
                        menu: menu.replayed(),
                    }
                } else {
                    // No choice: ask for the number, the explicit path.
                    self.collect_fresh()
                }
            }
            State::Confirming { number, menu } if menu.due(now) => {
                if menu.replays < MENU_REPLAYS {
                    self.play(vec![named("confirm")]);
                    State::Confirming {
                        number,
                        menu: menu.replayed(),
                    }
                } else {
                    // Not confirmed: the number is not registered unconfirmed.
                    self.collect_fresh()
                }
            }
            State::Collecting {
                digits,
                deadline: Some(deadline),
                ..
            } if deadline <= now => self.judge(digits),
            state @ (State::Idle
            | State::Holding { speaking: true, .. }
            | State::AniOffer { .. }
            | State::Confirming { .. }
            | State::Collecting { .. }
            | State::Registering
            | State::Returning
            | State::Closing
            | State::Ended) => state,
        };
    }

    /// Whether the caller is simply waiting in the queue — the greeting and
    /// the callback offer have been said and hold music plays — and not
    /// entering a number or being told something: such a caller can be
    /// connected to a free agent. (During the greeting the caller is still
    /// deciding whether to take the callback offer.)
    pub fn is_waiting_in_queue(&self) -> bool {
        matches!(
            self.state,
            State::Holding {
                speaking: false,
                ..
            }
        ) && self.offer_announced
    }

    /// Whether the caller is on hold in the queue now: the welcome (and
    /// any offer or estimate) has been said and hold music plays. The call
    /// layer remembers that it once was (a later hang-up, even in number
    /// entry, is then an abandon in the queue, not in the IVR).
    pub fn reached_queue(&self) -> bool {
        matches!(
            self.state,
            State::Holding {
                speaking: false,
                ..
            }
        )
    }

    /// Whether the flow has asked for the hangup and wants nothing more.
    #[cfg(test)]
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// The latest ECBT the flow was given: the one it quotes in the
    /// "registered" prompt, to be stored as the quoted ECBT.
    pub fn ecbt(&self) -> Option<Ecbt> {
        self.ecbt
    }

    /// Invalid entries so far in the current registration attempt.
    #[cfg(test)]
    pub(crate) fn invalid_entries(&self) -> u32 {
        self.invalid
    }

    /// Why the last entry was judged invalid (for the call log).
    pub fn last_rejection(&self) -> Option<InvalidNumber> {
        self.last_rejection
    }

    /// The call this flow serves.
    pub fn call(&self) -> &CallInfo {
        &self.call
    }

    /// The caller's ANI as an acceptable national number, if it is one.
    pub fn ani_number(&self) -> Option<&PhoneNumber> {
        self.ani_number.as_ref()
    }
}

/// Times a menu ("ani_offer", "confirm") is replayed on no choice before
/// the flow moves on.
const MENU_REPLAYS: u32 = 2;

/// A national entry ends on its tenth digit.
const NATIONAL_DIGITS: usize = 10;

/// An `011` entry ends at the E.164 maximum: 011 + 15 digits.
const MAX_INTERNATIONAL_KEYED: usize = 3 + 15;

/// Digits kept from before Start; more is not a caller typing ahead.
const MAX_EARLY_KEYS: usize = 32;

/// The highest number there is a prompt for (`number_60`).
const MAX_SPOKEN_NUMBER: u32 = 60;

const NUMBER_PROMPTS: [&str; MAX_SPOKEN_NUMBER as usize + 1] = [
    "number_0",
    "number_1",
    "number_2",
    "number_3",
    "number_4",
    "number_5",
    "number_6",
    "number_7",
    "number_8",
    "number_9",
    "number_10",
    "number_11",
    "number_12",
    "number_13",
    "number_14",
    "number_15",
    "number_16",
    "number_17",
    "number_18",
    "number_19",
    "number_20",
    "number_21",
    "number_22",
    "number_23",
    "number_24",
    "number_25",
    "number_26",
    "number_27",
    "number_28",
    "number_29",
    "number_30",
    "number_31",
    "number_32",
    "number_33",
    "number_34",
    "number_35",
    "number_36",
    "number_37",
    "number_38",
    "number_39",
    "number_40",
    "number_41",
    "number_42",
    "number_43",
    "number_44",
    "number_45",
    "number_46",
    "number_47",
    "number_48",
    "number_49",
    "number_50",
    "number_51",
    "number_52",
    "number_53",
    "number_54",
    "number_55",
    "number_56",
    "number_57",
    "number_58",
    "number_59",
    "number_60",
];

const DIGIT_PROMPTS: [&str; 10] = [
    "digit_0", "digit_1", "digit_2", "digit_3", "digit_4", "digit_5", "digit_6", "digit_7",
    "digit_8", "digit_9",
];

/// The step the caller is in (chart in the module docs).
#[derive(Debug)]
enum State {
    /// Created, waiting for Start.
    Idle,
    /// In the queue: greeting, ECBT, offer, hold music.
    Holding {
        /// Speech (not hold music) is playing and will report PlaybackDone.
        speaking: bool,
        /// RequestEcbt is outstanding; its answer is announced.
        ecbt_requested: bool,
        /// The next periodic announcement; None when disabled.
        next_announce: Option<Instant>,
    },
    /// "1 for the number you are calling from, 2 for another".
    AniOffer { number: PhoneNumber, menu: Menu },
    /// Collecting the number.
    Collecting {
        digits: String,
        /// "enter_number" (after "invalid_number") is playing.
        prompt: bool,
        /// First-digit or inter-digit deadline; None while the prompt plays.
        deadline: Option<Instant>,
    },
    /// Read-back and "1 to confirm, 2 to re-enter".
    Confirming { number: PhoneNumber, menu: Menu },
    /// Register emitted; waiting for RegistrationDone.
    Registering,
    /// Third strike: "returning you to the queue" is playing.
    Returning,
    /// The last prompts are playing; Hangup follows.
    Closing,
    /// Hangup emitted.
    Ended,
}

/// A prompt that asks for a one-key choice.
#[derive(Debug, Clone, Copy)]
struct Menu {
    /// The prompt is playing.
    prompt: bool,
    /// No choice by then: replay or move on. None while the prompt plays.
    deadline: Option<Instant>,
    replays: u32,
}

impl Menu {
    fn playing() -> Self {
        Self {
            prompt: true,
            deadline: None,
            replays: 0,
        }
    }

    fn replayed(self) -> Self {
        Self {
            prompt: true,
            deadline: None,
            replays: self.replays + 1,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// [`Input`] with the digit parsed.
#[derive(Debug, Clone, Copy)]
enum Event {
    Start {
        offer_callbacks: bool,
        announce_ecbt: bool,
        ecbt: Ecbt,
    },
    PlaybackDone,
    Key(Key),
    Ecbt(Ecbt),
    RegistrationDone(RegistrationOutcome),
}

/// A DTMF key the flow understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// `'0'..='9'`.
    Digit(char),
    Star,
    Pound,
}

impl Key {
    fn parse(c: char) -> Option<Key> {
        match c {
            '0'..='9' => Some(Key::Digit(c)),
            '*' => Some(Key::Star),
            '#' => Some(Key::Pound),
            _ => None,
        }
    }
}

impl Flow {
    /// One transition.
    fn step(&mut self, now: Instant, state: State, event: Event) -> State {
        match (state, event) {
            // ---- Idle
            (
                State::Idle,
                Event::Start {
                    offer_callbacks,
                    announce_ecbt,
                    ecbt,
                },
            ) => {
                self.ecbt = Some(ecbt);
                self.announce_ecbt = announce_ecbt;
                if !offer_callbacks {
                    // Gates closed: say so and disconnect (issue 3 §4).
                    self.play(vec![named("welcome"), named("unable")]);
                    return State::Closing;
                }
                let mut speech = vec![named("welcome")];
                if announce_ecbt {
                    speech.extend(ecbt_phrase(ecbt));
                }
                if now >= self.offer_at {
                    speech.push(named("callback_offer"));
                    self.offer_announced = true;
                }
                self.play(speech);
                State::Holding {
                    speaking: true,
                    ecbt_requested: false,
                    next_announce: self.next_announce(now),
                }
            }
            (State::Idle, Event::Key(key)) => {
                if self.early.len() < MAX_EARLY_KEYS {
                    self.early.push((key, now));
                }
                State::Idle
            }
            (State::Idle, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                State::Idle
            }
            (State::Idle, Event::PlaybackDone | Event::RegistrationDone(_)) => State::Idle,

            // ---- Holding
            (
                State::Holding {
                    speaking,
                    ecbt_requested,
                    next_announce,
                },
                Event::Key(key),
            ) => {
                if key == Key::Digit('1') && now >= self.offer_at {
                    // Speech or hold music is always playing here.
                    self.actions.push_back(Action::StopPlayback);
                    self.accept_offer()
                } else {
                    // Not a choice (or the offer is not open yet): dropped,
                    // the prompt or music goes on.
                    State::Holding {
                        speaking,
                        ecbt_requested,
                        next_announce,
                    }
                }
            }
            (
                State::Holding {
                    speaking: true,
                    ecbt_requested,
                    next_announce,
                },
                Event::PlaybackDone,
            ) => self.hold_tick(now, false, ecbt_requested, next_announce),
            (
                state @ State::Holding {
                    speaking: false, ..
                },
                Event::PlaybackDone,
            ) => {
                // Stale: hold music never ends.
                state
            }
            (
                State::Holding {
                    speaking,
                    ecbt_requested,
                    next_announce,
                },
                Event::Ecbt(ecbt),
            ) => {
                self.ecbt = Some(ecbt);
                if !ecbt_requested {
                    return State::Holding {
                        speaking,
                        ecbt_requested,
                        next_announce,
                    };
                }
                let mut speech = ecbt_phrase(ecbt);
                if now >= self.offer_at {
                    speech.push(named("callback_offer"));
                    self.offer_announced = true;
                }
                self.play(speech);
                State::Holding {
                    speaking: true,
                    ecbt_requested: false,
                    next_announce: self.next_announce(now),
                }
            }
            (state @ State::Holding { .. }, Event::Start { .. } | Event::RegistrationDone(_)) => {
                state
            }

            // ---- AniOffer
            (State::AniOffer { number, menu }, Event::Key(key)) => match key {
                Key::Digit('1') => {
                    self.barge_in(menu.prompt);
                    self.register(number)
                }
                Key::Digit('2') => {
                    self.barge_in(menu.prompt);
                    self.collect_fresh()
                }
                Key::Digit(first) => {
                    // A key that can only start a number: "another number",
                    // and this is its first digit.
                    self.barge_in(menu.prompt);
                    self.collect_digit(now, String::new(), first)
                }
                Key::Star | Key::Pound => State::AniOffer { number, menu },
            },
            (State::AniOffer { number, menu }, Event::PlaybackDone) => State::AniOffer {
                number,
                menu: self.menu_prompt_done(now, menu),
            },
            (state @ State::AniOffer { .. }, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                state
            }
            (state @ State::AniOffer { .. }, Event::Start { .. } | Event::RegistrationDone(_)) => {
                state
            }

            // ---- Collecting
            (
                State::Collecting {
                    mut digits, prompt, ..
                },
                Event::Key(key),
            ) => {
                self.barge_in(prompt);
                match key {
                    Key::Digit(d) => self.collect_digit(now, digits, d),
                    // `#` ends the entry, whatever its length.
                    Key::Pound => self.judge(digits),
                    // `*` starts over: the first-digit wait begins again.
                    Key::Star => {
                        digits.clear();
                        State::Collecting {
                            digits,
                            prompt: false,
                            deadline: now.checked_add(self.settings.first_digit_timeout),
                        }
                    }
                }
            }
            (
                State::Collecting {
                    digits,
                    prompt: true,
                    ..
                },
                Event::PlaybackDone,
            ) => State::Collecting {
                // A digit would have stopped the prompt: `digits` is empty.
                digits,
                prompt: false,
                deadline: now.checked_add(self.settings.first_digit_timeout),
            },
            (state @ State::Collecting { prompt: false, .. }, Event::PlaybackDone) => state,
            (state @ State::Collecting { .. }, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                state
            }
            (
                state @ State::Collecting { .. },
                Event::Start { .. } | Event::RegistrationDone(_),
            ) => state,

            // ---- Confirming
            (State::Confirming { number, menu }, Event::Key(key)) => match key {
                Key::Digit('1') => {
                    self.barge_in(menu.prompt);
                    self.register(number)
                }
                Key::Digit('2') => {
                    // Re-entry is the caller's choice, not an invalid entry.
                    self.barge_in(menu.prompt);
                    self.collect_fresh()
                }
                Key::Digit(_) | Key::Star | Key::Pound => State::Confirming { number, menu },
            },
            (State::Confirming { number, menu }, Event::PlaybackDone) => State::Confirming {
                number,
                menu: self.menu_prompt_done(now, menu),
            },
            (state @ State::Confirming { .. }, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                state
            }
            (
                state @ State::Confirming { .. },
                Event::Start { .. } | Event::RegistrationDone(_),
            ) => state,

            // ---- Registering
            (State::Registering, Event::RegistrationDone(outcome)) => {
                // The durable commit is done (or failed) before any of these.
                let speech = match outcome {
                    RegistrationOutcome::Registered => match self.ecbt {
                        Some(ecbt) if self.announce_ecbt => {
                            let mut speech = vec![named("registered")];
                            speech.extend(minutes_phrase(ecbt));
                            speech.push(named("goodbye"));
                            speech
                        }
                        // No time was quoted: a sentence that needs none.
                        _ => vec![named("registered_asap"), named("goodbye")],
                    },
                    RegistrationOutcome::AlreadyScheduled => {
                        vec![named("already_scheduled"), named("goodbye")]
                    }
                    RegistrationOutcome::Failed => vec![named("unable"), named("goodbye")],
                };
                self.play(speech);
                State::Closing
            }
            (State::Registering, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                State::Registering
            }
            (State::Registering, Event::Key(_) | Event::PlaybackDone | Event::Start { .. }) => {
                State::Registering
            }

            // ---- Returning
            (State::Returning, Event::PlaybackDone) => {
                self.actions.push_back(Action::ReturnToQueue);
                // A new press of 1 starts a new attempt with fresh tries.
                self.invalid = 0;
                if self.announce_ecbt {
                    // The ECBT for the restored position is announced next.
                    self.actions.push_back(Action::RequestEcbt);
                }
                self.play(vec![Prompt::Hold]);
                State::Holding {
                    speaking: false,
                    ecbt_requested: self.announce_ecbt,
                    next_announce: self.next_announce(now),
                }
            }
            (State::Returning, Event::Ecbt(ecbt)) => {
                self.ecbt = Some(ecbt);
                State::Returning
            }
            (
                State::Returning,
                Event::Key(_) | Event::Start { .. } | Event::RegistrationDone(_),
            ) => State::Returning,

            // ---- Closing
            (State::Closing, Event::PlaybackDone) => {
                self.actions.push_back(Action::Hangup);
                State::Ended
            }
            (
                State::Closing,
                Event::Key(_) | Event::Ecbt(_) | Event::Start { .. } | Event::RegistrationDone(_),
            ) => State::Closing,

            // ---- Ended
            (
                State::Ended,
                Event::Start { .. }
                | Event::PlaybackDone
                | Event::Key(_)
                | Event::Ecbt(_)
                | Event::RegistrationDone(_),
            ) => State::Ended,
        }
    }

    /// Holding with media idle (`music_playing` false: speech just ended) or
    /// with hold music playing (a timer): announce what is due, else music.
    fn hold_tick(
        &mut self,
        now: Instant,
        music_playing: bool,
        ecbt_requested: bool,
        next_announce: Option<Instant>,
    ) -> State {
        if next_announce.is_some_and(|at| at <= now) {
            let next_announce = self.next_announce(now);
            if self.announce_ecbt {
                // Announced when the answer arrives; music meanwhile.
                self.actions.push_back(Action::RequestEcbt);
                if !music_playing {
                    self.play(vec![Prompt::Hold]);
                }
                return State::Holding {
                    speaking: false,
                    ecbt_requested: true,
                    next_announce,
                };
            }
            if now >= self.offer_at {
                // No ECBT to announce: the offer alone is repeated.
                self.offer_announced = true;
                self.play(vec![named("callback_offer")]);
                return State::Holding {
                    speaking: true,
                    ecbt_requested,
                    next_announce,
                };
            }
            if !music_playing {
                self.play(vec![Prompt::Hold]);
            }
            return State::Holding {
                speaking: false,
                ecbt_requested,
                next_announce,
            };
        }
        if !self.offer_announced && now >= self.offer_at {
            // offer_after has passed: the offer opens.
            self.offer_announced = true;
            self.play(vec![named("callback_offer")]);
            return State::Holding {
                speaking: true,
                ecbt_requested,
                next_announce,
            };
        }
        if !music_playing {
            self.play(vec![Prompt::Hold]);
        }
        State::Holding {
            speaking: false,
            ecbt_requested,
            next_announce,
        }
    }

    /// '1' at the offer: a new registration attempt.
    fn accept_offer(&mut self) -> State {
        self.invalid = 0;
        match self.ani_number.clone() {
            Some(number) => {
                self.play(vec![named("ani_offer")]);
                State::AniOffer {
                    number,
                    menu: Menu::playing(),
                }
            }
            None => self.collect_fresh(),
        }
    }

    /// Asks for the number with an empty buffer.
    fn collect_fresh(&mut self) -> State {
        self.play(vec![named("enter_number")]);
        State::Collecting {
            digits: String::new(),
            prompt: true,
            deadline: None,
        }
    }

    /// Appends a digit; ends the entry when it cannot grow any more.
    fn collect_digit(&mut self, now: Instant, mut digits: String, d: char) -> State {
        digits.push(d);
        let international = digits.starts_with("011");
        if (!international && digits.len() >= NATIONAL_DIGITS)
            || digits.len() >= MAX_INTERNATIONAL_KEYED
        {
            return self.judge(digits);
        }
        State::Collecting {
            digits,
            prompt: false,
            deadline: now.checked_add(self.settings.inter_digit_timeout),
        }
    }

    /// The entry has ended: validate it.
    fn judge(&mut self, mut digits: String) -> State {
        match number::validate(&digits, &self.settings.policy) {
            Ok(number) => self.confirm(number),
            Err(why) => {
                self.last_rejection = Some(why);
                self.invalid += 1;
                if self.invalid >= self.settings.max_invalid.max(1) {
                    self.play(vec![named("invalid_number"), named("returning_to_queue")]);
                    return State::Returning;
                }
                // Issue 3 §1: the buffer is cleared now, so digits keyed
                // during "not valid" count for the next try.
                digits.clear();
                self.play(vec![named("invalid_number"), named("enter_number")]);
                State::Collecting {
                    digits,
                    prompt: true,
                    deadline: None,
                }
            }
        }
    }

    /// Reads the number back and asks for confirmation.
    fn confirm(&mut self, number: PhoneNumber) -> State {
        let spoken = number.spoken_digits();
        let mut speech = Vec::with_capacity(spoken.len() + 3);
        speech.push(named("you_entered"));
        let digits = match (&number, self.settings.spoken_international_prefix) {
            (PhoneNumber::International { .. }, true) => {
                speech.push(named("international_prefix"));
                spoken.get(3..).unwrap_or_default()
            }
            (PhoneNumber::International { .. } | PhoneNumber::National { .. }, _) => &spoken[..],
        };
        speech.extend(digits.iter().filter_map(|&c| digit_prompt(c)));
        speech.push(named("confirm"));
        self.play(speech);
        State::Confirming {
            number,
            menu: Menu::playing(),
        }
    }

    fn register(&mut self, number: PhoneNumber) -> State {
        self.actions.push_back(Action::Register { number });
        State::Registering
    }

    /// A menu's prompt ended: the wait for a choice starts.
    fn menu_prompt_done(&self, now: Instant, menu: Menu) -> Menu {
        if !menu.prompt {
            // Stale PlaybackDone.
            return menu;
        }
        Menu {
            prompt: false,
            deadline: now.checked_add(self.settings.first_digit_timeout),
            replays: menu.replays,
        }
    }

    fn barge_in(&mut self, playing: bool) {
        if playing {
            self.actions.push_back(Action::StopPlayback);
        }
    }

    fn play(&mut self, prompts: Vec<Prompt>) {
        self.actions.push_back(Action::Play(prompts));
    }

    fn next_announce(&self, now: Instant) -> Option<Instant> {
        if self.settings.announce_interval.is_zero() {
            return None;
        }
        now.checked_add(self.settings.announce_interval)
    }
}

fn named(name: &'static str) -> Prompt {
    Prompt::Named(name)
}

fn digit_prompt(c: char) -> Option<Prompt> {
    let d = c.to_digit(10)?;
    DIGIT_PROMPTS.get(d as usize).map(|&name| named(name))
}

/// "Your estimated wait time is" + [`minutes_phrase`].
fn ecbt_phrase(ecbt: Ecbt) -> Vec<Prompt> {
    let mut speech = vec![named("ecbt_intro")];
    speech.extend(minutes_phrase(ecbt));
    speech
}

/// The ECBT as words, with prompts up to `number_60`:
///
/// | estimate            | spoken                          |
/// |---------------------|---------------------------------|
/// | `Minutes(0)`        | "about one minute" (never zero) |
/// | `Minutes(1)`        | "about one minute"              |
/// | `Minutes(2..=60)`   | "about N minutes"               |
/// | `Minutes(61..)`     | "more than sixty minutes"       |
/// | `MoreThan(n)`       | "more than min(n, 60) minutes"  |
fn minutes_phrase(ecbt: Ecbt) -> Vec<Prompt> {
    let (more_than, n) = match ecbt {
        Ecbt::Minutes(n) if n > MAX_SPOKEN_NUMBER => (true, MAX_SPOKEN_NUMBER),
        Ecbt::Minutes(n) => (false, n.max(1)),
        Ecbt::MoreThan(n) => (true, n.min(MAX_SPOKEN_NUMBER)),
    };
    let mut speech = Vec::with_capacity(3);
    speech.push(named(if more_than {
        "ecbt_more_than"
    } else {
        "ecbt_about"
    }));
    let number = NUMBER_PROMPTS
        .get(n as usize)
        .copied()
        .expect("n is at most MAX_SPOKEN_NUMBER, the table's last index");
    speech.push(named(number));
    speech.push(named(if n == 1 { "minute" } else { "minutes" }));
    speech
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call driven by a fake clock: `t0` is captured once, every input
    /// happens at `t0 + ms`.
    struct Call {
        flow: Flow,
        t0: Instant,
    }

    impl Call {
        fn new(settings: FlowSettings, ani: Option<&str>) -> Self {
            let t0 = Instant::now();
            let call = CallInfo {
                ani: ani.map(Into::into),
                called: "8005550100".into(),
            };
            Self {
                flow: Flow::new(t0, settings, call),
                t0,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn drain(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.flow.poll_action()).collect()
        }

        fn input(&mut self, ms: u64, input: Input) -> Vec<Action> {
            self.flow.handle(self.at(ms), input);
            self.drain()
        }

        fn start(&mut self, ms: u64, ecbt: Ecbt) -> Vec<Action> {
            self.input(
                ms,
                Input::Start {
                    offer_callbacks: true,
                    announce_ecbt: true,
                    ecbt,
                },
            )
        }

        fn done(&mut self, ms: u64) -> Vec<Action> {
            self.input(ms, Input::PlaybackDone)
        }

        fn key(&mut self, ms: u64, c: char) -> Vec<Action> {
            self.input(ms, Input::Digit(c))
        }

        /// Keys `keys` one every `step_ms` from `ms`; all actions in order.
        fn keys(&mut self, ms: u64, step_ms: u64, keys: &str) -> Vec<Action> {
            let mut actions = Vec::new();
            for (i, c) in keys.chars().enumerate() {
                actions.extend(self.key(ms + step_ms * i as u64, c));
            }
            actions
        }

        /// Fires every timer due up to `t0 + ms`, as an engine would.
        fn run_until(&mut self, ms: u64) -> Vec<Action> {
            let until = self.at(ms);
            let mut actions = Vec::new();
            for _ in 0..100 {
                match self.flow.poll_timeout() {
                    Some(t) if t <= until => {
                        self.flow.handle_timeout(t);
                        actions.extend(self.drain());
                    }
                    Some(_) | None => return actions,
                }
            }
            panic!("timers keep firing");
        }

        /// Start (ECBT 5 minutes, offer open), greeting done, '1' pressed
        /// during hold music at 10 s: "enter_number" (no valid ANI) is
        /// playing and finishes at 13 s.
        fn reach_entry(&mut self) {
            assert_eq!(self.start(0, Ecbt::Minutes(5)), [greeting_5()]);
            assert_eq!(self.done(9_000), [hold()]);
            assert_eq!(
                self.key(10_000, '1'),
                [Action::StopPlayback, play(&["enter_number"])]
            );
            assert_eq!(self.done(13_000), []);
        }

        /// `reach_entry`, then `digits` keyed from 14 s, 400 ms apart; the
        /// read-back is playing.
        fn reach_confirm(&mut self, digits: &str) -> u64 {
            self.reach_entry();
            assert_eq!(self.keys(14_000, 400, digits), [readback(digits)]);
            14_000 + 400 * digits.len() as u64
        }
    }

    fn play(names: &[&'static str]) -> Action {
        Action::Play(names.iter().map(|&n| Prompt::Named(n)).collect())
    }

    fn hold() -> Action {
        Action::Play(vec![Prompt::Hold])
    }

    fn greeting_5() -> Action {
        play(&[
            "welcome",
            "ecbt_intro",
            "ecbt_about",
            "number_5",
            "minutes",
            "callback_offer",
        ])
    }

    fn readback(digits: &str) -> Action {
        let mut names = vec!["you_entered"];
        names.extend(
            digits
                .chars()
                .map(|c| DIGIT_PROMPTS[c.to_digit(10).expect("digit") as usize]),
        );
        names.push("confirm");
        play(&names)
    }

    fn register(digits: &str, policy: &NumberPolicy) -> Action {
        Action::Register {
            number: number::validate(digits, policy).expect("valid number"),
        }
    }

    fn national(digits: &str) -> Action {
        register(digits, &NumberPolicy::default())
    }

    fn international_settings() -> FlowSettings {
        FlowSettings {
            policy: NumberPolicy {
                allow_international: true,
                max_rate_per_minute: 0.25,
                rates: vec![("44".into(), 0.02)],
                blacklist: Vec::new(),
            },
            ..FlowSettings::default()
        }
    }

    fn spoke(actions: &[Action], name: &str) -> bool {
        actions.iter().any(|a| match a {
            Action::Play(prompts) => prompts
                .iter()
                .any(|p| matches!(p, Prompt::Named(n) if *n == name)),
            Action::StopPlayback
            | Action::RequestEcbt
            | Action::Register { .. }
            | Action::ReturnToQueue
            | Action::Hangup => false,
        })
    }

    #[test]
    fn waiting_in_queue_only_once_the_offer_was_said_and_hold_music_plays() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.start(0, Ecbt::Minutes(5));
        assert!(
            !call.flow.is_waiting_in_queue(),
            "the greeting and offer are playing"
        );
        call.done(9_000);
        assert!(
            call.flow.is_waiting_in_queue(),
            "hold music after the offer"
        );
        call.key(10_000, '1');
        assert!(
            !call.flow.is_waiting_in_queue(),
            "taking the callback offer"
        );
    }

    #[test]
    fn happy_path_with_repeated_digits_registers_exactly_those_digits() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        assert_eq!(call.done(end + 6_000), []);
        let actions = call.key(end + 7_000, '1');
        assert_eq!(actions, [national("3125550188")]);
        let Action::Register { number } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(number.as_digits(), "3125550188");
        // Nothing is said until the commit is answered.
        assert_eq!(call.flow.poll_timeout(), None);
        assert_eq!(call.done(end + 7_100), []);
        assert_eq!(
            call.input(
                end + 7_200,
                Input::RegistrationDone(RegistrationOutcome::Registered)
            ),
            [play(&[
                "registered",
                "ecbt_about",
                "number_5",
                "minutes",
                "goodbye"
            ])]
        );
        // The closing prompts are not interruptible.
        assert_eq!(call.key(end + 8_000, '1'), []);
        assert!(!call.flow.is_ended());
        assert_eq!(call.done(end + 14_000), [Action::Hangup]);
        assert!(call.flow.is_ended());
        assert_eq!(call.flow.poll_timeout(), None);
        assert_eq!(call.key(end + 15_000, '1'), []);
    }

    #[test]
    fn ani_offer_accepted_registers_the_ani_without_entry() {
        let mut call = Call::new(FlowSettings::default(), Some("+13125550188"));
        assert_eq!(call.start(0, Ecbt::Minutes(5)), [greeting_5()]);
        assert_eq!(
            call.key(2_000, '1'),
            [Action::StopPlayback, play(&["ani_offer"])]
        );
        assert_eq!(
            call.key(3_000, '1'),
            [Action::StopPlayback, national("3125550188")]
        );
        assert!(!spoke(&call.drain(), "enter_number"));
    }

    #[test]
    fn ani_offer_two_goes_reach_entry() {
        let mut call = Call::new(FlowSettings::default(), Some("13125550188"));
        call.start(0, Ecbt::Minutes(5));
        assert_eq!(
            call.key(2_000, '1'),
            [Action::StopPlayback, play(&["ani_offer"])]
        );
        assert_eq!(call.done(6_000), []);
        assert_eq!(call.key(7_000, '2'), [play(&["enter_number"])]);
        assert_eq!(call.done(10_000), []);
        assert_eq!(
            call.keys(11_000, 300, "6175550123"),
            [readback("6175550123")]
        );
        assert_eq!(
            call.key(20_000, '1'),
            [Action::StopPlayback, national("6175550123")]
        );
    }

    #[test]
    fn ani_offer_digit_other_than_a_choice_starts_the_other_number() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        call.start(0, Ecbt::Minutes(5));
        call.key(2_000, '1');
        // '6' while "ani_offer" plays: barge-in, and it is the first digit.
        let mut actions = call.keys(3_000, 300, "6175550123");
        assert_eq!(actions.remove(0), Action::StopPlayback);
        assert_eq!(actions, [readback("6175550123")]);
    }

    #[test]
    fn ani_offer_ignores_star_and_pound() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        call.start(0, Ecbt::Minutes(5));
        call.key(2_000, '1');
        assert_eq!(call.key(2_500, '*'), []);
        assert_eq!(call.key(2_600, '#'), []);
        assert_eq!(
            call.key(3_000, '1'),
            [Action::StopPlayback, national("3125550188")]
        );
    }

    #[test]
    fn ani_offer_without_choice_replays_twice_then_asks_for_the_number() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        call.start(0, Ecbt::Minutes(5));
        call.key(2_000, '1');
        assert_eq!(call.done(6_000), []);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(16_000)));
        assert_eq!(call.run_until(16_000), [play(&["ani_offer"])]);
        call.done(20_000);
        assert_eq!(call.run_until(30_000), [play(&["ani_offer"])]);
        call.done(34_000);
        assert_eq!(call.run_until(44_000), [play(&["enter_number"])]);
        assert_eq!(call.flow.invalid_entries(), 0);
    }

    #[test]
    fn invalid_ani_gets_no_ani_offer() {
        for ani in ["9115550188", "anonymous", "+442079460000"] {
            let mut call = Call::new(FlowSettings::default(), Some(ani));
            assert_eq!(call.flow.ani_number(), None, "{ani}");
            call.start(0, Ecbt::Minutes(5));
            assert_eq!(
                call.key(2_000, '1'),
                [Action::StopPlayback, play(&["enter_number"])],
                "{ani}"
            );
        }
    }

    #[test]
    fn three_invalid_entries_return_to_queue_then_hold_with_periodic_ecbt() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        // 1: the leading 1 callers are told not to key; entry ends at 10 digits.
        assert_eq!(
            call.keys(14_000, 300, "1312555018"),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(
            call.flow.last_rejection(),
            Some(InvalidNumber::LeadingOneOrZero)
        );
        assert_eq!(call.flow.invalid_entries(), 1);
        call.done(20_000);
        // 2: N11.
        assert_eq!(
            call.keys(21_000, 300, "9115550188"),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::ServiceCode));
        call.done(28_000);
        // 3: too short, ended by '#'.
        assert_eq!(
            call.keys(29_000, 300, "312#"),
            [play(&["invalid_number", "returning_to_queue"])]
        );
        assert_eq!(call.flow.invalid_entries(), 3);
        // Not interruptible; the digits are dropped.
        assert_eq!(call.keys(30_000, 100, "3125550188"), []);
        assert_eq!(call.flow.poll_timeout(), None);
        // Back in line (original position: the engine's business), and the
        // ECBT for that position is announced.
        assert_eq!(
            call.done(34_000),
            [Action::ReturnToQueue, Action::RequestEcbt, hold()]
        );
        assert_eq!(
            call.input(34_010, Input::Ecbt(Ecbt::Minutes(7))),
            [play(&[
                "ecbt_intro",
                "ecbt_about",
                "number_7",
                "minutes",
                "callback_offer"
            ])]
        );
        assert_eq!(call.flow.poll_timeout(), None, "no timer while speaking");
        assert_eq!(call.done(40_000), [hold()]);
        // Periodic re-announcement, measured from the last one.
        assert_eq!(call.flow.poll_timeout(), Some(call.at(94_010)));
        assert_eq!(call.run_until(94_009), []);
        assert_eq!(call.run_until(94_010), [Action::RequestEcbt]);
        assert_eq!(
            call.input(94_020, Input::Ecbt(Ecbt::Minutes(6))),
            [play(&[
                "ecbt_intro",
                "ecbt_about",
                "number_6",
                "minutes",
                "callback_offer"
            ])]
        );
        assert_eq!(call.done(100_000), [hold()]);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(154_020)));
        // Press 1 still works, with fresh tries.
        assert_eq!(
            call.key(101_000, '1'),
            [Action::StopPlayback, play(&["enter_number"])]
        );
        assert_eq!(call.flow.invalid_entries(), 0);
        call.done(104_000);
        assert_eq!(
            call.keys(105_000, 300, "3125550188"),
            [readback("3125550188")]
        );
        call.key(110_000, '1');
        // The latest estimate is the one quoted.
        assert_eq!(call.flow.ecbt(), Some(Ecbt::Minutes(6)));
        assert_eq!(
            call.input(
                110_100,
                Input::RegistrationDone(RegistrationOutcome::Registered)
            ),
            [play(&[
                "registered",
                "ecbt_about",
                "number_6",
                "minutes",
                "goodbye"
            ])]
        );
    }

    #[test]
    fn invalid_then_valid_registers() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        assert_eq!(
            call.keys(14_000, 300, "2115550188"),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::ServiceCode));
        call.done(20_000);
        assert_eq!(
            call.keys(21_000, 300, "2125550188"),
            [readback("2125550188")]
        );
        call.done(28_000);
        assert_eq!(call.key(29_000, '1'), [national("2125550188")]);
        assert_eq!(call.flow.invalid_entries(), 1);
    }

    #[test]
    fn digits_typed_during_not_valid_prompt_count_for_next_try() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        assert_eq!(
            call.keys(14_000, 300, "312555#"),
            [play(&["invalid_number", "enter_number"])]
        );
        // Keyed at once, while "not valid" plays: barge-in, and they count.
        let mut actions = call.keys(16_200, 300, "3125550188");
        assert_eq!(actions.remove(0), Action::StopPlayback);
        assert_eq!(actions, [readback("3125550188")]);
    }

    #[test]
    fn digits_before_the_invalid_judgement_do_not_leak_into_the_next_try() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        // "1312555018" is judged on its 10th digit; "8" comes after.
        assert_eq!(
            call.keys(14_000, 300, "13125550188"),
            [
                play(&["invalid_number", "enter_number"]),
                Action::StopPlayback
            ]
        );
        // The buffer holds only "8": nine more digits make ten.
        assert_eq!(
            call.keys(20_000, 300, "312555018"),
            [readback("8312555018")]
        );
    }

    #[test]
    fn star_restarts_entry() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        assert_eq!(call.keys(14_000, 300, "31299*"), []);
        // After '*' the first-digit wait starts again.
        assert_eq!(call.flow.poll_timeout(), Some(call.at(15_500 + 10_000)));
        assert_eq!(
            call.keys(16_000, 300, "3125550188"),
            [readback("3125550188")]
        );
        assert_eq!(call.flow.invalid_entries(), 0);
    }

    #[test]
    fn pound_ends_entry_early_and_short_entry_is_invalid() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        assert_eq!(call.keys(14_000, 300, "312555"), []);
        assert_eq!(
            call.key(16_000, '#'),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::TooShort));
        assert_eq!(call.flow.invalid_entries(), 1);
    }

    #[test]
    fn first_digit_timeout_counts_as_an_invalid_try() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        // Measured from the end of "enter_number" (13 s).
        assert_eq!(call.flow.poll_timeout(), Some(call.at(23_000)));
        assert_eq!(call.run_until(22_999), []);
        assert_eq!(
            call.run_until(23_000),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.invalid_entries(), 1);
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::TooShort));
    }

    #[test]
    fn inter_digit_timeout_counts_as_an_invalid_try() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        call.keys(14_000, 1_000, "3125");
        // Each digit re-arms the wait from its arrival: the last came at 17 s.
        assert_eq!(call.flow.poll_timeout(), Some(call.at(22_000)));
        assert_eq!(call.key(21_900, '5'), []);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(26_900)));
        assert_eq!(call.run_until(26_899), []);
        assert_eq!(
            call.run_until(26_900),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.invalid_entries(), 1);
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::TooShort));
    }

    #[test]
    fn early_handle_timeout_does_nothing() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        call.flow.handle_timeout(call.at(14_000));
        assert_eq!(call.drain(), []);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(23_000)));
    }

    #[test]
    fn type_ahead_one_and_full_number_before_prompts_end() {
        let mut call = Call::new(FlowSettings::default(), None);
        assert_eq!(call.start(0, Ecbt::Minutes(5)), [greeting_5()]);
        // All keyed during the greeting, no PlaybackDone in between.
        let actions = call.keys(1_000, 100, "13125550188");
        assert_eq!(
            actions,
            [
                Action::StopPlayback,
                play(&["enter_number"]),
                Action::StopPlayback,
                readback("3125550188"),
            ]
        );
        // Confirmed ahead, during the read-back.
        assert_eq!(
            call.key(2_200, '1'),
            [Action::StopPlayback, national("3125550188")]
        );
    }

    #[test]
    fn digits_before_start_are_kept_in_order() {
        let mut call = Call::new(FlowSettings::default(), None);
        assert_eq!(call.keys(0, 10, "13125550188"), []);
        assert_eq!(
            call.start(500, Ecbt::Minutes(5)),
            [
                greeting_5(),
                Action::StopPlayback,
                play(&["enter_number"]),
                Action::StopPlayback,
                readback("3125550188"),
            ]
        );
    }

    #[test]
    fn confirm_two_reenters() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        assert_eq!(
            call.key(end + 1_000, '2'),
            [Action::StopPlayback, play(&["enter_number"])]
        );
        call.done(end + 4_000);
        assert_eq!(
            call.keys(end + 5_000, 300, "6175550123"),
            [readback("6175550123")]
        );
        call.done(end + 15_000);
        assert_eq!(call.key(end + 16_000, '1'), [national("6175550123")]);
        assert_eq!(
            call.flow.invalid_entries(),
            0,
            "re-entry is not an invalid entry"
        );
    }

    #[test]
    fn confirm_ignores_keys_that_are_not_a_choice() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        assert_eq!(call.keys(end + 100, 100, "3*#0"), []);
        assert_eq!(call.done(end + 6_000), []);
        assert_eq!(call.key(end + 7_000, '1'), [national("3125550188")]);
    }

    #[test]
    fn confirm_without_choice_replays_twice_then_reenters() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        call.done(end + 6_000);
        assert_eq!(call.run_until(end + 16_000), [play(&["confirm"])]);
        call.done(end + 20_000);
        assert_eq!(call.run_until(end + 30_000), [play(&["confirm"])]);
        call.done(end + 34_000);
        assert_eq!(call.run_until(end + 44_000), [play(&["enter_number"])]);
        assert_eq!(call.flow.invalid_entries(), 0);
    }

    #[test]
    fn gates_closed_plays_unable_then_hangs_up() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        let start = Input::Start {
            offer_callbacks: false,
            announce_ecbt: true,
            ecbt: Ecbt::Minutes(5),
        };
        assert_eq!(call.input(0, start), [play(&["welcome", "unable"])]);
        assert_eq!(call.key(1_000, '1'), []);
        assert_eq!(call.flow.poll_timeout(), None);
        assert_eq!(call.done(6_000), [Action::Hangup]);
        assert!(call.flow.is_ended());
    }

    #[test]
    fn announce_ecbt_false_never_speaks_the_ecbt() {
        let mut call = Call::new(FlowSettings::default(), None);
        let mut all = call.input(
            0,
            Input::Start {
                offer_callbacks: true,
                announce_ecbt: false,
                ecbt: Ecbt::Minutes(5),
            },
        );
        assert_eq!(all, [play(&["welcome", "callback_offer"])]);
        all.extend(call.done(6_000));
        // The periodic turn repeats the offer alone, and asks for no ECBT.
        assert_eq!(call.run_until(60_000), [play(&["callback_offer"])]);
        all.extend(call.done(64_000));
        all.extend(call.key(65_000, '1'));
        call.done(68_000);
        all.extend(call.keys(69_000, 300, "3125550188"));
        all.extend(call.key(73_000, '1'));
        all.extend(call.input(
            73_100,
            Input::RegistrationDone(RegistrationOutcome::Registered),
        ));
        assert_eq!(all.last(), Some(&play(&["registered_asap", "goodbye"])));
        assert!(!all.contains(&Action::RequestEcbt));
        assert!(!spoke(&all, "ecbt_intro"));
        assert!(!spoke(&all, "number_5"));
    }

    #[test]
    fn offer_after_defers_the_offer_with_hold_music() {
        let settings = FlowSettings {
            offer_after: Duration::from_secs(30),
            ..FlowSettings::default()
        };
        let mut call = Call::new(settings, None);
        assert_eq!(
            call.start(0, Ecbt::Minutes(5)),
            [play(&[
                "welcome",
                "ecbt_intro",
                "ecbt_about",
                "number_5",
                "minutes"
            ])]
        );
        // Not offered yet: '1' is no choice and does not interrupt.
        assert_eq!(call.key(2_000, '1'), []);
        assert_eq!(call.done(8_000), [hold()]);
        assert_eq!(call.key(9_000, '1'), []);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(30_000)));
        assert_eq!(call.run_until(29_999), []);
        assert_eq!(call.run_until(30_000), [play(&["callback_offer"])]);
        assert_eq!(call.done(35_000), [hold()]);
        assert_eq!(
            call.key(36_000, '1'),
            [Action::StopPlayback, play(&["enter_number"])]
        );
    }

    #[test]
    fn offer_due_during_speech_waits_for_its_end() {
        let settings = FlowSettings {
            offer_after: Duration::from_secs(5),
            ..FlowSettings::default()
        };
        let mut call = Call::new(settings, None);
        call.start(0, Ecbt::Minutes(5));
        assert_eq!(call.flow.poll_timeout(), None);
        assert_eq!(call.done(8_000), [play(&["callback_offer"])]);
        assert_eq!(call.done(13_000), [hold()]);
        assert_eq!(call.flow.poll_timeout(), Some(call.at(60_000)));
    }

    #[test]
    fn holding_ignores_keys_other_than_one() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.start(0, Ecbt::Minutes(5));
        assert_eq!(call.keys(1_000, 100, "023456789*#"), []);
        assert_eq!(call.done(9_000), [hold()]);
        assert_eq!(call.keys(10_000, 100, "0*#5"), []);
        // Stale PlaybackDone while hold music loops.
        assert_eq!(call.done(11_000), []);
        // Not DTMF at all.
        assert_eq!(call.key(12_000, 'A'), []);
    }

    #[test]
    fn registration_failed_plays_unable_and_never_registered() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        assert_eq!(
            call.key(end + 100, '1'),
            [Action::StopPlayback, national("3125550188")]
        );
        let actions = call.input(
            end + 200,
            Input::RegistrationDone(RegistrationOutcome::Failed),
        );
        assert_eq!(actions, [play(&["unable", "goodbye"])]);
        assert!(!spoke(&actions, "registered"));
        assert_eq!(call.done(end + 5_000), [Action::Hangup]);
    }

    #[test]
    fn registered_is_never_said_without_registration_done() {
        let mut call = Call::new(FlowSettings::default(), None);
        let end = call.reach_confirm("3125550188");
        call.key(end + 100, '1');
        let mut actions = call.run_until(end + 600_000);
        actions.extend(call.done(end + 600_001));
        actions.extend(call.keys(end + 600_002, 1, "1#"));
        actions.extend(call.input(end + 600_010, Input::Ecbt(Ecbt::Minutes(3))));
        assert_eq!(actions, []);
        assert!(!call.flow.is_ended());
    }

    #[test]
    fn already_scheduled_plays_notice_and_hangs_up() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        call.start(0, Ecbt::Minutes(5));
        call.key(1_000, '1');
        assert_eq!(
            call.key(2_000, '1'),
            [Action::StopPlayback, national("3125550188")]
        );
        assert_eq!(
            call.input(
                2_100,
                Input::RegistrationDone(RegistrationOutcome::AlreadyScheduled)
            ),
            [play(&["already_scheduled", "goodbye"])]
        );
        assert_eq!(call.done(8_000), [Action::Hangup]);
    }

    #[test]
    fn international_accepted_reads_back_with_spoken_prefix() {
        let settings = international_settings();
        let policy = settings.policy.clone();
        let mut call = Call::new(settings, None);
        call.reach_entry();
        // Ten digits do not end an 011 entry.
        assert_eq!(call.keys(14_000, 300, "0114420794"), []);
        let actions = call.keys(17_000, 300, "60000#");
        let mut want = vec!["you_entered", "international_prefix"];
        want.extend(
            "442079460000"
                .chars()
                .map(|c| DIGIT_PROMPTS[c.to_digit(10).expect("digit") as usize]),
        );
        want.push("confirm");
        assert_eq!(actions, [play(&want)]);
        call.done(30_000);
        assert_eq!(
            call.key(31_000, '1'),
            [register("011442079460000", &policy)]
        );
    }

    #[test]
    fn international_entry_ends_on_inter_digit_timeout_and_reads_zero_one_one() {
        let settings = FlowSettings {
            spoken_international_prefix: false,
            ..international_settings()
        };
        let mut call = Call::new(settings, None);
        call.reach_entry();
        assert_eq!(call.keys(14_000, 300, "011442079460000"), []);
        assert_eq!(
            call.flow.poll_timeout(),
            Some(call.at(14_000 + 300 * 14 + 5_000))
        );
        assert_eq!(call.run_until(30_000), [readback("011442079460000")]);
    }

    #[test]
    fn international_entry_ends_at_the_e164_maximum() {
        let mut call = Call::new(international_settings(), None);
        call.reach_entry();
        assert_eq!(call.keys(14_000, 100, "01144207946000"), []);
        // 011 + 15 digits: no more can follow.
        assert_eq!(
            call.keys(16_000, 100, "0123"),
            [play(&[
                "you_entered",
                "international_prefix",
                "digit_4",
                "digit_4",
                "digit_2",
                "digit_0",
                "digit_7",
                "digit_9",
                "digit_4",
                "digit_6",
                "digit_0",
                "digit_0",
                "digit_0",
                "digit_0",
                "digit_1",
                "digit_2",
                "digit_3",
                "confirm",
            ])]
        );
    }

    #[test]
    fn international_refused_when_policy_forbids() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        assert_eq!(
            call.keys(14_000, 300, "011442079460000#"),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(
            call.flow.last_rejection(),
            Some(InvalidNumber::InternationalNotAllowed)
        );
    }

    #[test]
    fn international_refused_above_max_rate() {
        let mut settings = international_settings();
        settings.policy.rates.push(("447".into(), 0.40));
        let mut call = Call::new(settings, None);
        call.reach_entry();
        assert_eq!(
            call.keys(14_000, 300, "011447700900123#"),
            [play(&["invalid_number", "enter_number"])]
        );
        assert_eq!(call.flow.last_rejection(), Some(InvalidNumber::RateTooHigh));
    }

    #[test]
    fn ecbt_more_than_is_announced_and_quoted() {
        let mut call = Call::new(FlowSettings::default(), Some("3125550188"));
        assert_eq!(
            call.start(0, Ecbt::MoreThan(30)),
            [play(&[
                "welcome",
                "ecbt_intro",
                "ecbt_more_than",
                "number_30",
                "minutes",
                "callback_offer"
            ])]
        );
        call.key(1_000, '1');
        call.key(2_000, '1');
        assert_eq!(
            call.input(
                2_100,
                Input::RegistrationDone(RegistrationOutcome::Registered)
            ),
            [play(&[
                "registered",
                "ecbt_more_than",
                "number_30",
                "minutes",
                "goodbye"
            ])]
        );
    }

    #[test]
    fn minutes_phrase_covers_singular_zero_and_beyond_sixty() {
        let words = |e| -> Vec<Prompt> { minutes_phrase(e) };
        let n =
            |names: &[&'static str]| -> Vec<Prompt> { names.iter().map(|&x| named(x)).collect() };
        assert_eq!(
            words(Ecbt::Minutes(0)),
            n(&["ecbt_about", "number_1", "minute"])
        );
        assert_eq!(
            words(Ecbt::Minutes(1)),
            n(&["ecbt_about", "number_1", "minute"])
        );
        assert_eq!(
            words(Ecbt::Minutes(2)),
            n(&["ecbt_about", "number_2", "minutes"])
        );
        assert_eq!(
            words(Ecbt::Minutes(60)),
            n(&["ecbt_about", "number_60", "minutes"])
        );
        assert_eq!(
            words(Ecbt::Minutes(61)),
            n(&["ecbt_more_than", "number_60", "minutes"])
        );
        assert_eq!(
            words(Ecbt::MoreThan(1)),
            n(&["ecbt_more_than", "number_1", "minute"])
        );
        assert_eq!(
            words(Ecbt::MoreThan(45)),
            n(&["ecbt_more_than", "number_45", "minutes"])
        );
        assert_eq!(
            words(Ecbt::MoreThan(u32::MAX)),
            n(&["ecbt_more_than", "number_60", "minutes"])
        );
    }

    #[test]
    fn number_prompt_table_matches_its_index() {
        for (i, name) in NUMBER_PROMPTS.iter().enumerate() {
            assert_eq!(*name, format!("number_{i}"));
        }
        for (i, name) in DIGIT_PROMPTS.iter().enumerate() {
            assert_eq!(*name, format!("digit_{i}"));
        }
    }

    #[test]
    fn zero_announce_interval_arms_no_hold_timer() {
        let settings = FlowSettings {
            announce_interval: Duration::ZERO,
            ..FlowSettings::default()
        };
        let mut call = Call::new(settings, None);
        call.start(0, Ecbt::Minutes(5));
        assert_eq!(call.done(9_000), [hold()]);
        assert_eq!(call.flow.poll_timeout(), None);
    }

    #[test]
    fn zero_max_invalid_returns_on_the_first_invalid_entry() {
        let settings = FlowSettings {
            max_invalid: 0,
            ..FlowSettings::default()
        };
        let mut call = Call::new(settings, None);
        call.reach_entry();
        assert_eq!(
            call.key(14_000, '#'),
            [play(&["invalid_number", "returning_to_queue"])]
        );
    }

    #[test]
    fn unanswered_ecbt_request_is_repeated_next_interval() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.start(0, Ecbt::Minutes(5));
        call.done(9_000);
        assert_eq!(call.run_until(60_000), [Action::RequestEcbt]);
        // The engine never answered: asked again one interval later.
        assert_eq!(call.run_until(120_000), [Action::RequestEcbt]);
        // An unsolicited estimate is remembered but not announced.
        let mut fresh = Call::new(FlowSettings::default(), None);
        fresh.start(0, Ecbt::Minutes(5));
        fresh.done(9_000);
        assert_eq!(fresh.input(10_000, Input::Ecbt(Ecbt::Minutes(9))), []);
        assert_eq!(fresh.flow.ecbt(), Some(Ecbt::Minutes(9)));
    }

    #[test]
    fn dropping_a_flow_mid_entry_needs_nothing() {
        let mut call = Call::new(FlowSettings::default(), None);
        call.reach_entry();
        let actions = call.keys(14_000, 300, "31255");
        assert_eq!(actions, []);
        // The caller hangs up: the engine just drops the flow. No action
        // was owed (no Register was ever emitted), and a Flow owns nothing
        // that outlives it.
        drop(call);
    }
}
