//! The player model: who plays, how much, how often, and how the behavioural anomaly
//! scenarios bend it.
//!
//! A fixed population of players (segment, currency, typical stake, preferred payment
//! processor) is drawn once from the seed. A game provider's traffic is a stream of
//! *sessions*: a player deposits (through a payment processor) before playing, plays a
//! geometric number of rounds on one game (a bet, then a win when the round pays), and
//! may withdraw afterwards. Stakes are heavy-tailed: each player's typical stake is
//! lognormal within their segment, and each bet varies around it. A round pays with the
//! game's hit rate, and the payout's mean is set so that the game returns its configured
//! RTP. Random draws are `f64` (they pick quantities); every amount is then an integer
//! number of minor units, and money is only ever added as integers.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::scenarios::{account_text, Event, Label, Recorder, Scenario, ScenarioRates};
use crate::model::Kind;

/// Rounds in one velocity-burst episode (bot play), at most.
pub const BURST_BETS_MAX: u32 = 120;
/// Bets in one bonus-abuse episode, at most.
pub const BONUS_ABUSE_BETS_MAX: u64 = 150;
/// Chips of one stake, at most (a player's typical stake is capped at the same).
pub const STAKE_CHIPS_MAX: f64 = 1e6;
/// A winning round pays at most this multiple of its stake.
pub const PAYOUT_MULTIPLE_MAX: f64 = 10_000.0;
/// Ordinary bets an amount-spike session places before its spike, at least.
pub const SPIKE_HISTORY_BETS: u64 = 5;
/// Rounds of a rollback-abuse session, at least.
pub const ROLLBACK_ABUSE_ROUNDS_MIN: u64 = 3;
/// Tries to find a player whose currency a provider takes, before the session is skipped.
pub const PLAYER_PICK_TRIES_MAX: usize = 64;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    pub name: String,
    /// Share of the population.
    pub share: f64,
    /// Median typical stake of a player, in chips (a chip is `chip_minor` of the currency).
    pub stake_chips_median: f64,
    /// Spread of typical stakes between players of the segment (lognormal sigma).
    pub stake_sigma: f64,
    /// Spread of one player's bets around their typical stake (lognormal sigma).
    pub bet_sigma: f64,
    /// Mean rounds per session (before the provider's `rounds_factor`).
    pub rounds_mean: f64,
}

pub fn default_segments() -> Vec<SegmentConfig> {
    let segment = |name: &str, share, median, sigma, bet_sigma, rounds| SegmentConfig {
        name: name.into(),
        share,
        stake_chips_median: median,
        stake_sigma: sigma,
        bet_sigma,
        rounds_mean: rounds,
    };
    vec![
        segment("casual", 0.70, 5.0, 0.7, 0.3, 30.0),
        segment("regular", 0.25, 25.0, 0.8, 0.35, 50.0),
        segment("high_roller", 0.05, 300.0, 0.9, 0.4, 70.0),
    ]
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payout {
    /// Every winning round pays the same multiple (even-money roulette, fixed odds).
    Fixed,
    /// Winning rounds pay an exponentially distributed multiple (slots).
    #[default]
    Exponential,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameConfig {
    pub id: String,
    /// Return to player: the expected share of stakes paid back (0.90 to 0.98).
    pub rtp: f64,
    /// Share of rounds that pay anything.
    pub hit_rate: f64,
    #[serde(default)]
    pub payout: Payout,
}

/// Standard normal draw (Box-Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

pub fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -mean * (1.0 - rng.gen::<f64>()).ln()
}

/// At least 1, mean `mean`.
pub fn geometric(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 1.0 {
        return 1;
    }
    let failure = 1.0 - 1.0 / mean;
    let draw = 1.0 - rng.gen::<f64>();
    1 + (draw.ln() / failure.ln()).floor() as u64
}

/// Poisson draw (Knuth for small means, a rounded normal for large ones).
pub fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 30.0 {
        return (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut product: f64 = rng.gen();
    let mut count = 0;
    while product > limit {
        count += 1;
        product *= rng.gen::<f64>();
    }
    count
}

/// The payout of one round in basis points of the stake.
pub fn payout_bp(rng: &mut ChaCha8Rng, game: &GameConfig, rtp: f64) -> i64 {
    if rng.gen::<f64>() >= game.hit_rate {
        return 0;
    }
    let mean_multiple = rtp / game.hit_rate;
    let multiple = match game.payout {
        Payout::Fixed => mean_multiple,
        Payout::Exponential => exponential(rng, mean_multiple),
    };
    (multiple.min(PAYOUT_MULTIPLE_MAX) * 10_000.0).round() as i64
}

/// A win in minor units: the stake times the payout, rounded to the nearest minor unit
/// (half up). Truncating lost half a minor unit per win on average, which at the smallest
/// stakes (a 10-cent chip) took a percent or two off the game's RTP.
pub fn win_minor(stake_minor: i64, payout_bp: i64) -> i64 {
    (stake_minor * payout_bp + 5_000) / 10_000
}

#[derive(Clone, Copy, Debug)]
pub struct Player {
    pub segment: u8,
    pub currency: u8,
    pub typical_chips: u32,
    /// Picks the player's payment processor among those taking their currency.
    pub processor_choice: u32,
}

pub fn population(
    rng: &mut ChaCha8Rng,
    count: u32,
    segments: &[SegmentConfig],
    currency_shares: &[f64],
) -> Vec<Player> {
    let pick = |rng: &mut ChaCha8Rng, shares: &mut dyn Iterator<Item = f64>| -> u8 {
        let draw: f64 = rng.gen();
        let mut cumulative = 0.0;
        let mut last = 0u8;
        for (index, share) in shares.enumerate() {
            cumulative += share;
            last = index as u8;
            if draw < cumulative {
                return last;
            }
        }
        last
    };
    let segment_total: f64 = segments.iter().map(|segment| segment.share).sum();
    let currency_total: f64 = currency_shares.iter().sum();
    (0..count)
        .map(|_| {
            let segment = pick(rng, &mut segments.iter().map(|segment| segment.share / segment_total));
            let currency = pick(rng, &mut currency_shares.iter().map(|share| share / currency_total));
            let config = &segments[usize::from(segment)];
            let typical =
                lognormal(rng, config.stake_chips_median, config.stake_sigma).round().clamp(1.0, STAKE_CHIPS_MAX);
            Player { segment, currency, typical_chips: typical as u32, processor_choice: rng.gen() }
        })
        .collect()
}

/// A payment the session needs from the player's processor (generated by the processor's
/// own thread afterwards).
#[derive(Clone, Debug)]
pub struct Funding {
    pub time_ms: i64,
    pub player: u32,
    pub currency: u8,
    pub kind: Kind,
    pub amount_minor: i64,
    pub label: Option<Label>,
    pub processor: usize,
    /// (generating provider, sequence): a stable tie-breaker.
    pub origin: (u16, u64),
}

/// A game whose RTP is raised for a while (the `rtp_drift` scenario).
#[derive(Clone, Debug)]
pub struct DriftWindow {
    pub game: u16,
    pub start_ms: i64,
    pub end_ms: i64,
    pub rtp: f64,
    pub label: Label,
}

/// Everything the session generator of one game provider needs.
pub struct GameProvider<'a> {
    pub games: &'a [GameConfig],
    pub round_ms: f64,
    pub settle_ms: f64,
    pub rounds_factor: f64,
    /// Which simulator currencies the provider takes.
    pub takes_currency: Vec<bool>,
    pub segments: &'a [SegmentConfig],
    pub players: &'a [Player],
    pub chip_minor: &'a [i64],
    pub rates: &'a ScenarioRates,
    pub deposit_probability: f64,
    pub withdrawal_probability: f64,
    pub bonus_probability: f64,
    pub benign_rollback_probability: f64,
    /// Processor indexes (in the plan's provider list) per currency, and their names.
    pub processors_by_currency: &'a [Vec<usize>],
    pub provider_names: &'a [String],
    pub drift: Vec<DriftWindow>,
    /// The finest time step the provider's format carries (1 ms, or 1000 for whole seconds).
    pub time_resolution_ms: i64,
    pub owner: u16,
    pub next_tx: u64,
    pub next_round: u64,
    pub next_session: u64,
    pub next_funding: u64,
    pub sessions: u64,
}

/// One generated session: the provider's events and the payments it needs.
#[derive(Default)]
pub struct Session {
    pub events: Vec<Event>,
    pub fundings: Vec<Funding>,
}

enum SessionKind {
    Normal { spike: bool, rollback_abuse: bool },
    VelocityBurst,
    CashThrough,
    BonusAbuse,
}

impl GameProvider<'_> {
    fn tx(&mut self) -> u64 {
        self.next_tx += 1;
        self.next_tx
    }

    fn chip(&self, currency: u8) -> i64 {
        self.chip_minor[usize::from(currency)]
    }

    /// A round amount: at least `minor`, rounded up to a "nice" unit (100 chips).
    fn nice(&self, currency: u8, minor: f64) -> i64 {
        let unit = self.chip(currency) * 100;
        ((minor / unit as f64).ceil().max(1.0) as i64) * unit
    }

    fn pick_player(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        (0..PLAYER_PICK_TRIES_MAX).find_map(|_| {
            let index = rng.gen_range(0..self.players.len() as u32);
            self.takes_currency[usize::from(self.players[index as usize].currency)].then_some(index)
        })
    }

    fn processor(&self, player: &Player) -> Option<usize> {
        let candidates = &self.processors_by_currency[usize::from(player.currency)];
        (!candidates.is_empty()).then(|| candidates[player.processor_choice as usize % candidates.len()])
    }

    fn funding(
        &mut self,
        session: &mut Session,
        index: u32,
        kind: Kind,
        time_ms: i64,
        amount_minor: i64,
        label: Option<Label>,
    ) {
        let player = self.players[index as usize];
        let Some(processor) = self.processor(&player) else { return };
        self.next_funding += 1;
        session.fundings.push(Funding {
            time_ms,
            player: index,
            currency: player.currency,
            kind,
            amount_minor,
            label,
            processor,
            origin: (self.owner, self.next_funding),
        });
    }

    fn drift_at(&self, game: u16, at_ms: i64) -> Option<&DriftWindow> {
        self.drift.iter().find(|window| window.game == game && window.start_ms <= at_ms && at_ms < window.end_ms)
    }

    fn event(&mut self, kind: Kind, player: u32, amount: i64, at_ms: i64, session: u64) -> Event {
        let number = self.tx();
        let currency = self.players[player as usize].currency;
        let mut event = Event::new(number, kind, player, currency, amount, at_ms);
        event.session = session;
        event
    }

    /// One round: a bet and, when it pays, a win. Returns (bet index in `events`, won, end).
    #[allow(clippy::too_many_arguments)]
    fn round(
        &mut self,
        rng: &mut ChaCha8Rng,
        events: &mut Vec<Event>,
        player: u32,
        game: u16,
        stake_minor: i64,
        at_ms: i64,
        settle_ms: i64,
        session: u64,
        label: Option<Label>,
        benign_cancel: bool,
    ) -> (usize, bool, i64) {
        self.next_round += 1;
        let round = self.next_round;
        let drift = self.drift_at(game, at_ms).map(|window| (window.rtp, window.label));
        let config = &self.games[usize::from(game)];
        let rtp = drift.map_or(config.rtp, |(rtp, _)| rtp);
        let label = label.or(drift.map(|(_, label)| label));
        let mut bet = self.event(Kind::Bet, player, stake_minor, at_ms, session);
        bet.game = game;
        bet.round = round;
        bet.label = label;
        let bet_number = bet.number;
        events.push(bet);
        let bet_index = events.len() - 1;
        if benign_cancel {
            let mut rollback =
                self.event(Kind::Rollback, player, stake_minor, at_ms + rng.gen_range(500..3_000), session);
            rollback.game = game;
            rollback.round = round;
            rollback.original = bet_number;
            rollback.label = label;
            let end = rollback.occurred_ms;
            events.push(rollback);
            return (bet_index, false, end);
        }
        let config = &self.games[usize::from(game)];
        let win_minor = win_minor(stake_minor, payout_bp(rng, config, rtp));
        if win_minor > 0 {
            let mut win = self.event(Kind::Win, player, win_minor, at_ms + settle_ms, session);
            win.game = game;
            win.round = round;
            win.label = label;
            events.push(win);
            return (bet_index, true, at_ms + settle_ms);
        }
        (bet_index, false, at_ms)
    }

    fn stake(&self, rng: &mut ChaCha8Rng, player: &Player) -> i64 {
        let segment = &self.segments[usize::from(player.segment)];
        let chips = lognormal(rng, f64::from(player.typical_chips), segment.bet_sigma)
            .round()
            .clamp(1.0, STAKE_CHIPS_MAX) as i64;
        chips * self.chip(player.currency)
    }

    fn gap(&self, rng: &mut ChaCha8Rng) -> i64 {
        (self.round_ms * rng.gen_range(0.5..1.5)) as i64 + 1
    }

    fn settle(&self, rng: &mut ChaCha8Rng) -> i64 {
        (self.settle_ms * rng.gen_range(0.5..1.5)) as i64 + 1
    }

    /// Generates one session starting at `start_ms`.
    pub(crate) fn session(&mut self, rng: &mut ChaCha8Rng, start_ms: i64, recorder: &mut Recorder) -> Session {
        let mut session = Session::default();
        let Some(player_index) = self.pick_player(rng) else { return session };
        self.sessions += 1;
        let rates = self.rates;
        // One draw picks the session's kind: [velocity | cash-through | bonus abuse | spike | normal].
        let draw: f64 = rng.gen();
        let velocity_end = rates.velocity_burst;
        let cash_end = velocity_end + rates.cash_through;
        let bonus_end = cash_end + rates.bonus_abuse;
        let kind = if draw < velocity_end {
            SessionKind::VelocityBurst
        } else if draw < cash_end {
            SessionKind::CashThrough
        } else if draw < bonus_end {
            SessionKind::BonusAbuse
        } else {
            // Rollback abuse happens in ordinary sessions only; scaled so its share of all
            // sessions is its configured rate.
            let normal_share = 1.0 - bonus_end;
            let rollback_rate = if normal_share > 0.0 { (rates.rollback_abuse / normal_share).min(1.0) } else { 0.0 };
            let spike = draw < bonus_end + rates.amount_spike;
            SessionKind::Normal { spike, rollback_abuse: rng.gen_bool(rollback_rate) }
        };
        self.next_session += 1;
        let session_id = self.next_session;
        match kind {
            SessionKind::Normal { spike, rollback_abuse } => self.normal_session(
                rng,
                &mut session,
                player_index,
                session_id,
                start_ms,
                spike,
                rollback_abuse,
                recorder,
            ),
            SessionKind::VelocityBurst => {
                self.velocity_burst(rng, &mut session, player_index, session_id, start_ms, recorder)
            }
            SessionKind::CashThrough => {
                self.cash_through(rng, &mut session, player_index, session_id, start_ms, recorder)
            }
            SessionKind::BonusAbuse => {
                self.bonus_abuse(rng, &mut session, player_index, session_id, start_ms, recorder)
            }
        }
        session
    }

    #[allow(clippy::too_many_arguments)]
    fn normal_session(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: &mut Session,
        player_index: u32,
        session_id: u64,
        start_ms: i64,
        spike: bool,
        rollback_abuse: bool,
        recorder: &mut Recorder,
    ) {
        let player = self.players[player_index as usize];
        let segment = &self.segments[usize::from(player.segment)];
        let mut rounds = geometric(rng, segment.rounds_mean * self.rounds_factor);
        if spike {
            // The spike needs a history to stand out from: ordinary bets of the same player
            // come first in the same session.
            rounds = rounds.max(SPIKE_HISTORY_BETS + 1);
        }
        if rollback_abuse {
            // 2 to 5 rollbacks need as many bets (a one-round session made a single one).
            rounds = rounds.max(ROLLBACK_ABUSE_ROUNDS_MIN);
        }
        let game = rng.gen_range(0..self.games.len()) as u16;
        let typical_minor = i64::from(player.typical_chips) * self.chip(player.currency);
        if rng.gen_bool(self.deposit_probability) {
            let amount = self.nice(player.currency, typical_minor as f64 * rng.gen_range(20.0..60.0));
            let at = start_ms - rng.gen_range(30_000..300_000);
            self.funding(session, player_index, Kind::Deposit, at, amount, None);
        }
        let mut at = start_ms;
        if rng.gen_bool(self.bonus_probability) {
            let amount = self.nice(player.currency, typical_minor as f64 * 10.0);
            session.events.push(self.event(Kind::Bonus, player_index, amount, at, session_id));
            at += 1_000;
        }
        let spike_round = spike.then(|| rng.gen_range(SPIKE_HISTORY_BETS..rounds));
        let mut outcomes: Vec<(usize, bool, i64)> = Vec::with_capacity(rounds as usize);
        let mut end = at;
        for round in 0..rounds {
            let mut stake = self.stake(rng, &player);
            let mut label = None;
            if spike_round == Some(round) {
                let factor = rng.gen_range(40..=120);
                stake = typical_minor * factor;
                label = Some(recorder.label(
                    Scenario::AmountSpike,
                    &account_text(player_index),
                    at,
                    at,
                    format!("stake {stake} minor units, {factor}x the player's typical {typical_minor}"),
                ));
            }
            let cancel = label.is_none() && rng.gen_bool(self.benign_rollback_probability);
            let settle = self.settle(rng);
            let outcome =
                self.round(rng, &mut session.events, player_index, game, stake, at, settle, session_id, label, cancel);
            end = end.max(outcome.2);
            if !cancel && label.is_none() {
                outcomes.push(outcome);
            }
            at += self.gap(rng);
        }
        end = end.max(at);
        if rollback_abuse && !outcomes.is_empty() {
            let wanted = rng.gen_range(2..=5).min(outcomes.len());
            let mut chosen: Vec<(usize, bool, i64)> = Vec::with_capacity(wanted);
            // Losing bets first (the cheap abuse), then bets whose win was already settled.
            let mut order: Vec<usize> = (0..outcomes.len()).collect();
            order.sort_by_key(|&index| (outcomes[index].1, index));
            for index in order.into_iter().take(wanted) {
                chosen.push(outcomes[index]);
            }
            chosen.sort_by_key(|outcome| outcome.0);
            let mut rollbacks = Vec::with_capacity(chosen.len());
            let mut time = end;
            for (bet_index, _, _) in &chosen {
                time += rng.gen_range(60_000..600_000);
                rollbacks.push((*bet_index, time));
            }
            let settled_wins = chosen.iter().filter(|outcome| outcome.1).count();
            let label = recorder.label(
                Scenario::RollbackAbuse,
                &account_text(player_index),
                rollbacks[0].1,
                time,
                format!("{} rollbacks of bets, {settled_wins} after their win was settled", rollbacks.len()),
            );
            for (bet_index, at) in rollbacks {
                let bet = session.events[bet_index].clone();
                let mut rollback = self.event(Kind::Rollback, player_index, bet.amount_minor, at, session_id);
                rollback.game = bet.game;
                rollback.round = bet.round;
                rollback.original = bet.number;
                rollback.label = Some(label);
                session.events.push(rollback);
            }
            end = time;
        }
        if rng.gen_bool(self.withdrawal_probability) {
            let amount = self.nice(player.currency, typical_minor as f64 * rng.gen_range(10.0..80.0));
            let at = end + rng.gen_range(60_000..900_000);
            self.funding(session, player_index, Kind::Withdrawal, at, amount, None);
        }
    }

    fn velocity_burst(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: &mut Session,
        player_index: u32,
        session_id: u64,
        start_ms: i64,
        recorder: &mut Recorder,
    ) {
        let bets = rng.gen_range(40..=BURST_BETS_MAX);
        // The bot's fixed interval must show in the provider's files: where its times carry
        // whole seconds, the interval is 1 to 3 s from a whole second.
        let (start_ms, interval_ms) = if self.time_resolution_ms >= 1_000 {
            (start_ms - start_ms.rem_euclid(1_000), rng.gen_range(1..=3) * 1_000)
        } else {
            (start_ms, rng.gen_range(200..=500))
        };
        let game = rng.gen_range(0..self.games.len()) as u16;
        let stake = self.chip(self.players[player_index as usize].currency);
        let end = start_ms + i64::from(bets) * interval_ms;
        let label = recorder.label(
            Scenario::VelocityBurst,
            &account_text(player_index),
            start_ms,
            end,
            format!("{bets} bets of {stake} minor units every {interval_ms} ms"),
        );
        for bet in 0..i64::from(bets) {
            let at = start_ms + bet * interval_ms + rng.gen_range(0..=3);
            self.round(rng, &mut session.events, player_index, game, stake, at, 50, session_id, Some(label), false);
        }
    }

    fn cash_through(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: &mut Session,
        player_index: u32,
        session_id: u64,
        start_ms: i64,
        recorder: &mut Recorder,
    ) {
        let player = self.players[player_index as usize];
        let Some(processor) = self.processor(&player) else { return };
        let typical_minor = i64::from(player.typical_chips) * self.chip(player.currency);
        let amount = self.nice(player.currency, typical_minor as f64 * rng.gen_range(50.0..200.0));
        let withdraw_at = start_ms + rng.gen_range(300_000..1_800_000);
        let bets = rng.gen_range(0..=2);
        let provider = self.provider_names[processor].clone();
        let label = recorder.label_for(
            Scenario::CashThrough,
            &provider,
            &account_text(player_index),
            start_ms - 60_000,
            withdraw_at,
            format!("deposit {amount} minor units, {bets} minimum bets, withdrawal of the same amount"),
        );
        self.funding(session, player_index, Kind::Deposit, start_ms - 60_000, amount, Some(label));
        let game = rng.gen_range(0..self.games.len()) as u16;
        let stake = self.chip(player.currency);
        let mut at = start_ms;
        for _ in 0..bets {
            let settle = self.settle(rng);
            self.round(rng, &mut session.events, player_index, game, stake, at, settle, session_id, Some(label), false);
            at += self.gap(rng);
        }
        self.funding(session, player_index, Kind::Withdrawal, withdraw_at, amount, Some(label));
    }

    fn bonus_abuse(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: &mut Session,
        player_index: u32,
        session_id: u64,
        start_ms: i64,
        recorder: &mut Recorder,
    ) {
        let player = self.players[player_index as usize];
        let typical_minor = i64::from(player.typical_chips) * self.chip(player.currency);
        let bonus = self.nice(player.currency, typical_minor as f64 * rng.gen_range(20.0..60.0));
        let chip = self.chip(player.currency);
        let stake = ((bonus / 20) / chip).max(1) * chip;
        let wagering = rng.gen_range(1..=3);
        let bets = ((bonus * wagering) / stake).clamp(1, BONUS_ABUSE_BETS_MAX as i64);
        // The lowest-risk game: the one that pays most often.
        let game = (0..self.games.len())
            .max_by(|&a, &b| self.games[a].hit_rate.total_cmp(&self.games[b].hit_rate))
            .unwrap_or(0) as u16;
        let label = recorder.label(
            Scenario::BonusAbuse,
            &account_text(player_index),
            start_ms,
            start_ms,
            format!("bonus {bonus} minor units, {bets} bets of {stake} on the lowest-risk game, then withdrawal"),
        );
        let mut bonus_event = self.event(Kind::Bonus, player_index, bonus, start_ms, session_id);
        bonus_event.label = Some(label);
        session.events.push(bonus_event);
        let mut at = start_ms + 2_000;
        let mut end = at;
        for _ in 0..bets {
            let settle = self.settle(rng);
            let outcome = self.round(
                rng,
                &mut session.events,
                player_index,
                game,
                stake,
                at,
                settle,
                session_id,
                Some(label),
                false,
            );
            end = end.max(outcome.2);
            at += self.gap(rng);
        }
        let withdraw_at = end.max(at) + rng.gen_range(30_000..300_000);
        self.funding(session, player_index, Kind::Withdrawal, withdraw_at, bonus, Some(label));
        if let Some(episode) = recorder.episodes.iter_mut().rev().find(|episode| episode.number == label.episode) {
            episode.end_ms = withdraw_at;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn small_stakes_win_their_rtp_without_a_rounding_loss() {
        // 2 million rounds of 10 minor units (one USD chip) per game: a standard error of
        // about 0.0015 in the RTP, where truncating each win cost about 0.017.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let games = [
            GameConfig { id: "slots".into(), rtp: 0.92, hit_rate: 0.35, payout: Payout::Exponential },
            GameConfig { id: "roulette".into(), rtp: 0.973, hit_rate: 0.4865, payout: Payout::Fixed },
        ];
        for game in &games {
            let rounds = 2_000_000;
            let stake_minor = 10;
            let (mut won, mut won_squared) = (0i128, 0f64);
            for _ in 0..rounds {
                let win = win_minor(stake_minor, payout_bp(&mut rng, game, game.rtp));
                won += i128::from(win);
                won_squared += (win as f64 / stake_minor as f64).powi(2);
            }
            let rtp = won as f64 / (rounds as f64 * stake_minor as f64);
            let standard_error = ((won_squared / rounds as f64 - rtp * rtp) / rounds as f64).sqrt();
            assert!(
                (rtp - game.rtp).abs() <= 4.0 * standard_error + 0.001,
                "{}: RTP {rtp:.4} at {stake_minor} minor units a round, configured {} (standard error {standard_error:.4})",
                game.id,
                game.rtp
            );
        }
    }
}
