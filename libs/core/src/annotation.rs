//! Annotation queues: runs routed to human reviewers, the leases that keep two reviewers off
//! the same item, and the agreement statistics (Cohen's kappa) that say when to trust them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{FeedbackId, ProjectId, QueueId, RawJson, RunId, Timestamp};

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME_BYTES: usize = 256;
/// Longest reviewer name, in bytes.
pub const MAX_REVIEWER_BYTES: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Queue {
    pub id: QueueId,
    pub name: String,
    pub description: Option<String>,
    pub rubric_instructions: Option<String>,
    /// `[{feedback_key, description, ...}]`, kept as sent.
    pub rubric_items: Option<RawJson>,
    /// Reviews an item needs before it counts as completed (2+ for agreement statistics).
    pub num_reviewers_per_item: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Rules that add matching runs from the run stream.
    pub rules: Vec<RoutingRule>,
}

/// Adds every finished run that matches `filter` (the run-filter language) to the queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingRule {
    pub id: Uuid,
    pub filter: String,
    /// Only runs of these projects; empty means every project.
    pub project_ids: Vec<ProjectId>,
    /// Fraction of matching runs to add, decided by the run id so a redelivery decides alike.
    pub sampling_rate: f64,
    pub created_at: Timestamp,
}

impl RoutingRule {
    /// Whether this run falls in the sample (deterministic in the run id).
    pub fn samples(&self, run: RunId) -> bool {
        if self.sampling_rate >= 1.0 {
            return true;
        }
        let tail = u64::from_be_bytes(run.as_bytes()[8..16].try_into().expect("8 bytes"));
        (tail as f64 / u64::MAX as f64) < self.sampling_rate
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub reviewer: String,
    pub until: Timestamp,
}

/// One reviewer's submission for an item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: String,
    pub at: Timestamp,
    /// `(feedback key, label)`: the score (or categorical value) given per rubric key.
    pub labels: Vec<(String, String)>,
    pub feedback_ids: Vec<FeedbackId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: Uuid,
    pub queue_id: QueueId,
    pub run_id: RunId,
    pub project_id: Option<ProjectId>,
    pub start_time: Option<Timestamp>,
    pub added_at: Timestamp,
    pub last_reviewed_time: Option<Timestamp>,
    pub lease: Option<Lease>,
    pub reviews: Vec<Review>,
    /// Marked done explicitly (or archived through the platform API).
    pub done: bool,
}

/// Which items a listing wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    /// Not completed and not yet reviewed by the asking reviewer.
    NeedsMyReview,
    /// Reviewed by the asking reviewer, waiting for others.
    NeedsOthersReview,
    Completed,
}

impl ItemStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "needs_my_review" => Some(Self::NeedsMyReview),
            "needs_others_review" => Some(Self::NeedsOthersReview),
            "completed" | "archived" => Some(Self::Completed),
            _ => None,
        }
    }
}

impl QueueItem {
    pub fn completed(&self, reviewers_needed: u32) -> bool {
        self.done || self.distinct_reviewers() >= reviewers_needed.max(1) as usize
    }

    pub fn distinct_reviewers(&self) -> usize {
        self.reviews.iter().map(|r| r.reviewer.as_str()).collect::<BTreeSet<_>>().len()
    }

    pub fn reviewed_by(&self, reviewer: &str) -> bool {
        self.reviews.iter().any(|r| r.reviewer == reviewer)
    }

    /// Leased to someone other than `reviewer` at `now`.
    pub fn leased_to_other(&self, reviewer: &str, now: Timestamp) -> bool {
        self.lease.as_ref().is_some_and(|l| l.reviewer != reviewer && l.until > now)
    }

    pub fn has_status(&self, status: ItemStatus, reviewer: Option<&str>, reviewers_needed: u32) -> bool {
        let completed = self.completed(reviewers_needed);
        match status {
            ItemStatus::Completed => completed,
            ItemStatus::NeedsMyReview => !completed && reviewer.is_none_or(|r| !self.reviewed_by(r)),
            ItemStatus::NeedsOthersReview => !completed && reviewer.is_some_and(|r| self.reviewed_by(r)),
        }
    }

    /// Whether `reviewer` may take this item next at `now`.
    pub fn available_to(&self, reviewer: &str, now: Timestamp, reviewers_needed: u32) -> bool {
        !self.completed(reviewers_needed) && !self.reviewed_by(reviewer) && !self.leased_to_other(reviewer, now)
    }
}

/// Agreement between reviewers on one feedback key of a queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyAgreement {
    pub feedback_key: String,
    /// Items with labels from two or more reviewers.
    pub items: usize,
    /// Pairs of labels given to the same item by two reviewers.
    pub pairs: usize,
    /// Share of those pairs that agree.
    pub raw_agreement: Option<f64>,
    /// Cohen's kappa averaged over reviewer pairs (Light's kappa); with two reviewers it is
    /// exactly Cohen's kappa. `None` when no reviewer pair has a defined kappa.
    pub cohen_kappa: Option<f64>,
    pub reviewer_pairs: Vec<PairAgreement>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairAgreement {
    pub reviewers: [String; 2],
    pub items: usize,
    pub raw_agreement: f64,
    /// Undefined (`None`) when chance agreement is 1: both always gave the same single label.
    pub cohen_kappa: Option<f64>,
}

/// Cohen's kappa of two reviewers' labels on the same items.
pub fn cohen_kappa(pairs: &[(&str, &str)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let agree = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let mut ma: BTreeMap<&str, f64> = BTreeMap::new();
    let mut mb: BTreeMap<&str, f64> = BTreeMap::new();
    for (a, b) in pairs {
        *ma.entry(a).or_default() += 1.0;
        *mb.entry(b).or_default() += 1.0;
    }
    let chance: f64 = ma.iter().map(|(label, ca)| ca / n * mb.get(label).copied().unwrap_or(0.0) / n).sum();
    if (1.0 - chance).abs() < 1e-12 {
        return None;
    }
    Some((agree - chance) / (1.0 - chance))
}

/// Agreement per feedback key over a queue's items.
pub fn agreement(items: &[QueueItem]) -> Vec<KeyAgreement> {
    // key -> item -> reviewer -> label (a reviewer's latest label for that key on the item).
    let mut by_key: BTreeMap<&str, BTreeMap<Uuid, BTreeMap<&str, &str>>> = BTreeMap::new();
    for item in items {
        for review in &item.reviews {
            for (key, label) in &review.labels {
                by_key.entry(key).or_default().entry(item.id).or_default().insert(&review.reviewer, label);
            }
        }
    }
    let mut out = Vec::new();
    for (key, items) in by_key {
        let mut pair_labels: BTreeMap<(&str, &str), Vec<(&str, &str)>> = BTreeMap::new();
        let (mut multi, mut pairs, mut agreeing) = (0usize, 0usize, 0usize);
        for labels in items.values() {
            if labels.len() < 2 {
                continue;
            }
            multi += 1;
            let entries: Vec<(&str, &str)> = labels.iter().map(|(r, l)| (*r, *l)).collect();
            for (i, (ra, la)) in entries.iter().enumerate() {
                for (rb, lb) in &entries[i + 1..] {
                    pairs += 1;
                    agreeing += usize::from(la == lb);
                    pair_labels.entry((ra, rb)).or_default().push((la, lb));
                }
            }
        }
        let reviewer_pairs: Vec<PairAgreement> = pair_labels
            .into_iter()
            .map(|((a, b), labels)| PairAgreement {
                reviewers: [a.to_owned(), b.to_owned()],
                items: labels.len(),
                raw_agreement: labels.iter().filter(|(x, y)| x == y).count() as f64 / labels.len() as f64,
                cohen_kappa: cohen_kappa(&labels),
            })
            .collect();
        let kappas: Vec<f64> = reviewer_pairs.iter().filter_map(|p| p.cohen_kappa).collect();
        out.push(KeyAgreement {
            feedback_key: key.to_owned(),
            items: multi,
            pairs,
            raw_agreement: (pairs > 0).then(|| agreeing as f64 / pairs as f64),
            cohen_kappa: (!kappas.is_empty()).then(|| kappas.iter().sum::<f64>() / kappas.len() as f64),
            reviewer_pairs,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cohen_kappa_matches_a_worked_example() {
        // The textbook example: 50 items, yes/no; A says yes 25 times, B 30 times;
        // both yes 20, both no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4.
        let mut pairs = Vec::new();
        pairs.extend(std::iter::repeat_n(("yes", "yes"), 20));
        pairs.extend(std::iter::repeat_n(("yes", "no"), 5));
        pairs.extend(std::iter::repeat_n(("no", "yes"), 10));
        pairs.extend(std::iter::repeat_n(("no", "no"), 15));
        let k = cohen_kappa(&pairs).unwrap();
        assert!((k - 0.4).abs() < 1e-12, "{k}");
        assert_eq!(cohen_kappa(&[("a", "a"), ("a", "a")]), None, "undefined when chance agreement is 1");
        assert_eq!(cohen_kappa(&[("a", "b"), ("b", "a")]), Some(-1.0));
    }

    fn item(reviews: &[(&str, &str)]) -> QueueItem {
        QueueItem {
            id: Uuid::now_v7(),
            queue_id: QueueId(Uuid::nil()),
            run_id: RunId(Uuid::now_v7()),
            project_id: None,
            start_time: None,
            added_at: Timestamp(0),
            last_reviewed_time: None,
            lease: None,
            reviews: reviews
                .iter()
                .map(|(r, l)| Review {
                    reviewer: (*r).into(),
                    at: Timestamp(0),
                    labels: vec![("ok".into(), (*l).into())],
                    feedback_ids: vec![],
                })
                .collect(),
            done: false,
        }
    }

    #[test]
    fn agreement_counts_only_items_with_two_reviewers() {
        let items = vec![item(&[("ann", "1"), ("bob", "1")]), item(&[("ann", "0"), ("bob", "1")]), item(&[("ann", "1")])];
        let a = &agreement(&items)[0];
        assert_eq!((a.items, a.pairs), (2, 2));
        assert_eq!(a.raw_agreement, Some(0.5));
        // ann: 1,0 bob: 1,1 -> p_o 0.5, p_e = 0.5*1 + 0.5*0 = 0.5 -> kappa 0.
        assert_eq!(a.cohen_kappa, Some(0.0));
        assert!(item(&[("ann", "1")]).completed(1) && !item(&[("ann", "1")]).completed(2));
    }

    #[test]
    fn leases_keep_other_reviewers_off_until_expiry() {
        let mut it = item(&[]);
        it.lease = Some(Lease { reviewer: "ann".into(), until: Timestamp(100) });
        assert!(!it.available_to("bob", Timestamp(50), 1));
        assert!(it.available_to("ann", Timestamp(50), 1));
        assert!(it.available_to("bob", Timestamp(100), 1));
    }
}
