//! One callback attempt, agent first, as a pure state machine.
//!
//! ```text
//!             start
//!               │ InviteAgent
//!               ▼
//!         AgentRinging ──timeout──▶ CancelAgent ─▶ Done(AgentNoAnswer)
//!               │  ╲──agent fails (486/603/408/…)──▶ Done(AgentNoAnswer)
//!               │ agent answers
//!               ▼
//!          Whispering  (PlayToAgent "agent_whisper" + the number's digits)
//!               │ whisper played          ╲── agent hangs up ─▶ Done(AgentNoAnswer)
//!               │ InviteCustomer
//!               ▼
//!       CustomerRinging ──180 without SDP──▶ PlayRingbackToAgent
//!               │  ──183/180 with SDP────▶ RelayEarlyMedia (customer → agent)
//!               │  ──wait-for-answer timeout─▶ CancelCustomer ─▶ Telling(NoAnswer)
//!               │  ──4xx/5xx/6xx───────────▶ Telling(by status)
//!               │  ──agent hangs up────────▶ CancelCustomer ─▶ Done(AgentNoAnswer)
//!               │ customer answers
//!               ▼
//!            Bridged ──BYE from either side──▶ Hangup the other ─▶ Done(Answered)
//!
//!     Telling: "customer_no_answer" to the agent, then HangupAgent ─▶ Done(outcome)
//! ```
//!
//! The engine turns [`Action`]s into SIP and media work and feeds back
//! [`Input`]s; time is passed in. What happens to the callback afterwards
//! (retry, failover, completed) is the scheduler's decision, from the
//! [`Outcome`] (the scheduler's; an agent who hangs up before the customer
//! answers counts as `AgentNoAnswer`: the customer was not reached through
//! any fault of theirs) and the customer leg's SIP status.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::callback::scheduler::Outcome;
use crate::callback::scheduler::classify;

/// The prompt the agent hears before the customer's number.
pub const WHISPER_PROMPT: &str = "agent_whisper";

/// How long each leg may ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialerSettings {
    /// The agent must answer within this (then CANCEL; the agent cools down).
    pub agent_ring_timeout: Duration,
    /// The customer must answer within this (the queue's wait-for-answer).
    pub customer_ring_timeout: Duration,
}

/// What the engine reports to the dialer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The agent leg answered (2xx, ACKed).
    AgentAnswered,
    /// The agent leg failed with this final status (or 408 on timeout).
    AgentFailed(u16),
    /// The agent hung up (BYE).
    AgentEnded,
    /// The agent leg was lost: no RTP, no ACK, no session refresh, its
    /// port gone — not the agent's own BYE.
    AgentLost,
    /// The play list asked with [`Action::PlayToAgent`] finished.
    AgentPromptDone,
    /// A provisional response on the customer leg; `early_media` when it
    /// carried SDP.
    CustomerProgress {
        /// The status (180, 183 …).
        status: u16,
        /// Whether it carried an SDP answer (early media).
        early_media: bool,
    },
    /// The customer answered.
    CustomerAnswered,
    /// The customer leg failed with this final status.
    CustomerFailed(u16),
    /// The customer hung up (BYE) after answering.
    CustomerEnded,
}

/// What the dialer asks the engine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the INVITE to the agent.
    InviteAgent,
    /// CANCEL the ringing agent leg.
    CancelAgent,
    /// Play these prompts (names from the prompt set) to the agent only.
    PlayToAgent(Vec<String>),
    /// Play local ringback to the agent (a 180 without SDP).
    PlayRingbackToAgent,
    /// Relay the customer's early media to the agent.
    RelayEarlyMedia,
    /// Send the INVITE to the customer through the trunk.
    InviteCustomer,
    /// CANCEL the ringing customer leg; `ring_timeout` when nobody answered
    /// in time (else the agent went away).
    CancelCustomer {
        /// The wait-for-answer timeout ran out.
        ring_timeout: bool,
    },
    /// Relay RTP both ways between agent and customer.
    Bridge,
    /// BYE (or CANCEL if not answered) the agent leg.
    HangupAgent,
    /// BYE the customer leg.
    HangupCustomer,
    /// The attempt is over.
    Finished {
        /// How it went.
        outcome: Outcome,
        /// The customer leg's final SIP status, when it got one.
        customer_status: Option<u16>,
    },
}

/// One attempt.
#[derive(Debug)]
pub struct Dialer {
    settings: DialerSettings,
    state: State,
    whisper: Vec<String>,
    deadline: Option<Instant>,
    actions: VecDeque<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AgentRinging,
    Whispering,
    CustomerRinging,
    /// Telling the agent the customer did not answer; then hang up.
    Telling {
        outcome: Outcome,
        status: Option<u16>,
    },
    Bridged,
    Done,
}

impl Dialer {
    /// Starts an attempt at `now`: the agent is invited at once. `number`
    /// is the customer's number as digits, read to the agent in the whisper.
    pub fn start(now: Instant, settings: DialerSettings, number: &str) -> Dialer {
        Dialer::start_with(now, settings, WHISPER_PROMPT, number)
    }

    /// [`Dialer::start`] with another prompt before the number (an
    /// automatic task's agent prompt).
    pub fn start_with(
        now: Instant,
        settings: DialerSettings,
        prompt: &str,
        number: &str,
    ) -> Dialer {
        let mut whisper = vec![prompt.to_string()];
        whisper.extend(
            number
                .chars()
                .filter_map(|c| c.to_digit(10).map(|d| format!("digit_{d}"))),
        );
        let mut dialer = Dialer {
            settings,
            state: State::AgentRinging,
            whisper,
            deadline: Some(now + settings.agent_ring_timeout),
            actions: VecDeque::new(),
        };
        dialer.actions.push_back(Action::InviteAgent);
        dialer
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.state = match (self.state, input) {
            // ---- agent leg ringing
            (State::AgentRinging, Input::AgentAnswered) => {
                self.deadline = None;
                self.actions
                    .push_back(Action::PlayToAgent(self.whisper.clone()));
                State::Whispering
            }
            (State::AgentRinging, Input::AgentFailed(_) | Input::AgentEnded | Input::AgentLost) => {
                self.finish(Outcome::AgentNoAnswer, None)
            }
            // ---- whisper
            (State::Whispering, Input::AgentPromptDone) => {
                self.deadline = Some(now + self.settings.customer_ring_timeout);
                self.actions.push_back(Action::InviteCustomer);
                State::CustomerRinging
            }
            (State::Whispering, Input::AgentEnded | Input::AgentLost | Input::AgentFailed(_)) => {
                self.finish(Outcome::AgentNoAnswer, None)
            }
            // ---- customer leg ringing
            (
                State::CustomerRinging,
                Input::CustomerProgress {
                    early_media: true, ..
                },
            ) => {
                self.actions.push_back(Action::RelayEarlyMedia);
                State::CustomerRinging
            }
            (
                State::CustomerRinging,
                Input::CustomerProgress {
                    status,
                    early_media: false,
                },
            ) => {
                // RFC 3261 §21.1: 180 without SDP: the caller hears local
                // ringback. A 100 is not ringing.
                if status >= 180 {
                    self.actions.push_back(Action::PlayRingbackToAgent);
                }
                State::CustomerRinging
            }
            (State::CustomerRinging, Input::CustomerAnswered) => {
                self.deadline = None;
                self.actions.push_back(Action::Bridge);
                State::Bridged
            }
            (State::CustomerRinging, Input::CustomerFailed(status)) => {
                self.deadline = None;
                self.tell(classify(Some(status), false), Some(status))
            }
            (
                State::CustomerRinging,
                Input::AgentEnded | Input::AgentLost | Input::AgentFailed(_),
            ) => {
                self.actions.push_back(Action::CancelCustomer {
                    ring_timeout: false,
                });
                self.finish(Outcome::AgentNoAnswer, None)
            }
            // ---- telling the agent
            (State::Telling { outcome, status }, Input::AgentPromptDone) => {
                self.actions.push_back(Action::HangupAgent);
                self.finish(outcome, status)
            }
            (
                State::Telling { outcome, status },
                Input::AgentEnded | Input::AgentLost | Input::AgentFailed(_),
            ) => self.finish(outcome, status),
            // ---- bridged
            (State::Bridged, Input::CustomerEnded | Input::CustomerFailed(_)) => {
                self.actions.push_back(Action::HangupAgent);
                self.finish(Outcome::Answered, Some(200))
            }
            (State::Bridged, Input::AgentEnded | Input::AgentFailed(_)) => {
                self.actions.push_back(Action::HangupCustomer);
                self.finish(Outcome::Answered, Some(200))
            }
            // The customer was reached, but the talk was cut on the agent's
            // side: the attempt says so.
            (State::Bridged, Input::AgentLost) => {
                self.actions.push_back(Action::HangupCustomer);
                self.finish(Outcome::AgentLost, Some(200))
            }
            // Everything else is stale or irrelevant in that state (a late
            // provisional, a prompt finishing after the state moved on).
            (
                state @ (State::AgentRinging
                | State::Whispering
                | State::CustomerRinging
                | State::Telling { .. }
                | State::Bridged
                | State::Done),
                Input::AgentAnswered
                | Input::AgentFailed(_)
                | Input::AgentEnded
                | Input::AgentLost
                | Input::AgentPromptDone
                | Input::CustomerProgress { .. }
                | Input::CustomerAnswered
                | Input::CustomerFailed(_)
                | Input::CustomerEnded,
            ) => state,
        };
    }

    /// When [`Dialer::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Runs the ring timeouts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.deadline else { return };
        if now < at {
            return;
        }
        self.deadline = None;
        self.state = match self.state {
            State::AgentRinging => {
                self.actions.push_back(Action::CancelAgent);
                self.finish(Outcome::AgentNoAnswer, None)
            }
            State::CustomerRinging => {
                self.actions
                    .push_back(Action::CancelCustomer { ring_timeout: true });
                self.tell(Outcome::NoAnswer, None)
            }
            state @ (State::Whispering | State::Telling { .. } | State::Bridged | State::Done) => {
                state
            }
        };
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the attempt is over.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn tell(&mut self, outcome: Outcome, status: Option<u16>) -> State {
        self.actions.push_back(Action::PlayToAgent(vec![
            "customer_no_answer".into(),
            "goodbye".into(),
        ]));
        State::Telling { outcome, status }
    }

    fn finish(&mut self, outcome: Outcome, customer_status: Option<u16>) -> State {
        self.deadline = None;
        self.actions.push_back(Action::Finished {
            outcome,
            customer_status,
        });
        State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: DialerSettings = DialerSettings {
        agent_ring_timeout: Duration::from_secs(20),
        customer_ring_timeout: Duration::from_secs(30),
    };

    fn drain(d: &mut Dialer) -> Vec<Action> {
        std::iter::from_fn(|| d.poll_action()).collect()
    }

    fn finished(outcome: Outcome, customer_status: Option<u16>) -> Action {
        Action::Finished {
            outcome,
            customer_status,
        }
    }

    #[test]
    fn happy_path_agent_first_whisper_then_customer_then_bridge() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        assert_eq!(drain(&mut d), [Action::InviteAgent]);
        assert_eq!(d.poll_timeout(), Some(t0 + S.agent_ring_timeout));
        d.handle(t0, Input::AgentAnswered);
        let whisper: Vec<String> = [
            "agent_whisper",
            "digit_3",
            "digit_1",
            "digit_2",
            "digit_5",
            "digit_5",
            "digit_5",
            "digit_0",
            "digit_1",
            "digit_8",
            "digit_8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(drain(&mut d), [Action::PlayToAgent(whisper)]);
        assert_eq!(d.poll_timeout(), None, "no timer while whispering");
        let t1 = t0 + Duration::from_secs(4);
        d.handle(t1, Input::AgentPromptDone);
        assert_eq!(drain(&mut d), [Action::InviteCustomer]);
        assert_eq!(d.poll_timeout(), Some(t1 + S.customer_ring_timeout));
        d.handle(
            t1,
            Input::CustomerProgress {
                status: 100,
                early_media: false,
            },
        );
        assert_eq!(drain(&mut d), []);
        d.handle(
            t1,
            Input::CustomerProgress {
                status: 180,
                early_media: false,
            },
        );
        assert_eq!(drain(&mut d), [Action::PlayRingbackToAgent]);
        d.handle(
            t1,
            Input::CustomerProgress {
                status: 183,
                early_media: true,
            },
        );
        assert_eq!(drain(&mut d), [Action::RelayEarlyMedia]);
        d.handle(t1, Input::CustomerAnswered);
        assert_eq!(drain(&mut d), [Action::Bridge]);
        d.handle(t1, Input::CustomerEnded);
        assert_eq!(
            drain(&mut d),
            [Action::HangupAgent, finished(Outcome::Answered, Some(200))]
        );
        assert!(d.is_done());
    }

    #[test]
    fn the_agent_leg_lost_during_the_bridge_ends_the_customer_leg_as_agent_lost() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentAnswered);
        d.handle(t0, Input::AgentPromptDone);
        d.handle(t0, Input::CustomerAnswered);
        drain(&mut d);
        d.handle(t0, Input::AgentLost);
        assert_eq!(
            drain(&mut d),
            [
                Action::HangupCustomer,
                finished(Outcome::AgentLost, Some(200))
            ]
        );
    }

    #[test]
    fn agent_bye_during_the_bridge_ends_the_customer_leg() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentAnswered);
        d.handle(t0, Input::AgentPromptDone);
        d.handle(t0, Input::CustomerAnswered);
        drain(&mut d);
        d.handle(t0, Input::AgentEnded);
        assert_eq!(
            drain(&mut d),
            [
                Action::HangupCustomer,
                finished(Outcome::Answered, Some(200))
            ]
        );
    }

    #[test]
    fn agent_ring_timeout_cancels_and_is_not_a_customer_attempt() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        drain(&mut d);
        d.handle_timeout(t0 + S.agent_ring_timeout - Duration::from_millis(1));
        assert_eq!(drain(&mut d), []);
        d.handle_timeout(t0 + S.agent_ring_timeout);
        assert_eq!(
            drain(&mut d),
            [Action::CancelAgent, finished(Outcome::AgentNoAnswer, None)]
        );
        assert!(!Outcome::AgentNoAnswer.is_customer_attempt());
    }

    #[test]
    fn agent_rejecting_is_an_agent_no_answer() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        drain(&mut d);
        d.handle(t0, Input::AgentFailed(486));
        assert_eq!(drain(&mut d), [finished(Outcome::AgentNoAnswer, None)]);
    }

    #[test]
    fn customer_no_answer_cancels_tells_the_agent_then_hangs_up() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentAnswered);
        d.handle(t0, Input::AgentPromptDone);
        drain(&mut d);
        d.handle_timeout(t0 + S.customer_ring_timeout);
        assert_eq!(
            drain(&mut d),
            [
                Action::CancelCustomer { ring_timeout: true },
                Action::PlayToAgent(vec!["customer_no_answer".into(), "goodbye".into()])
            ]
        );
        // The 487 to our CANCEL arrives while the agent is being told.
        d.handle(t0, Input::CustomerFailed(487));
        assert_eq!(drain(&mut d), []);
        d.handle(t0, Input::AgentPromptDone);
        assert_eq!(
            drain(&mut d),
            [Action::HangupAgent, finished(Outcome::NoAnswer, None)]
        );
    }

    #[test]
    fn customer_failures_are_classified() {
        for (status, outcome) in [
            (486, Outcome::Busy),
            (600, Outcome::Busy),
            (480, Outcome::NoAnswer),
            (408, Outcome::NoAnswer),
            (404, Outcome::InvalidNumber),
            (484, Outcome::InvalidNumber),
            (604, Outcome::InvalidNumber),
            (503, Outcome::Failure),
            (403, Outcome::Failure),
        ] {
            let t0 = Instant::now();
            let mut d = Dialer::start(t0, S, "3125550188");
            d.handle(t0, Input::AgentAnswered);
            d.handle(t0, Input::AgentPromptDone);
            drain(&mut d);
            d.handle(t0, Input::CustomerFailed(status));
            d.handle(t0, Input::AgentPromptDone);
            let actions = drain(&mut d);
            assert_eq!(
                actions.last(),
                Some(&finished(outcome, Some(status))),
                "{status}"
            );
            assert!(outcome.is_customer_attempt());
        }
    }

    #[test]
    fn agent_hanging_up_while_the_customer_rings_cancels_the_customer() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentAnswered);
        d.handle(t0, Input::AgentPromptDone);
        drain(&mut d);
        d.handle(t0, Input::AgentEnded);
        assert_eq!(
            drain(&mut d),
            [
                Action::CancelCustomer {
                    ring_timeout: false
                },
                finished(Outcome::AgentNoAnswer, None)
            ]
        );
        assert!(!Outcome::AgentNoAnswer.is_customer_attempt());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn agent_hanging_up_during_the_whisper_ends_without_a_customer_attempt() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentAnswered);
        drain(&mut d);
        d.handle(t0, Input::AgentEnded);
        assert_eq!(drain(&mut d), [finished(Outcome::AgentNoAnswer, None)]);
    }

    #[test]
    fn stale_inputs_after_the_end_change_nothing() {
        let t0 = Instant::now();
        let mut d = Dialer::start(t0, S, "3125550188");
        d.handle(t0, Input::AgentFailed(480));
        drain(&mut d);
        for input in [
            Input::AgentAnswered,
            Input::CustomerAnswered,
            Input::AgentPromptDone,
            Input::CustomerEnded,
        ] {
            d.handle(t0, input);
        }
        d.handle_timeout(t0 + Duration::from_secs(3600));
        assert_eq!(drain(&mut d), []);
        assert!(d.is_done());
    }
}
