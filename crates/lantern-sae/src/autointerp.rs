//! Automated interpretability through any OpenAI-compatible chat endpoint: an explainer writes a
//! one-line explanation from a direction's top-activating windows; scorers judge it on held-out
//! windows — detection and fuzzing (delphi's scorers, balanced accuracy) and simulation (the SAE
//! paper's correlation of simulated and true activations, here one predicted number per window).

use lantern_chat::{Client, Message};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::examples::{mark, rng, Example, Record};
use crate::{Result, SaeError};

const SYSTEM: &str = "You are a careful interpretability researcher. You study features inside a \
language model and answer briefly.";

fn ask(client: &Client, user: String, max_tokens: usize) -> Result<String> {
    let msgs = [Message::new("system", SYSTEM), Message::new("user", user)];
    client
        .chat(&msgs, max_tokens, 0.0)
        .map_err(|e| SaeError::Config(format!("LLM request failed: {e}")))
}

/// The explainer's prompt for a record.
pub fn explain_prompt(r: &Record) -> String {
    let mut p = String::from(
        "Below are text snippets. In each, the tokens where a feature is active are marked \
         between << and >>.\n\n",
    );
    for (i, e) in r.explain.iter().enumerate() {
        p.push_str(&format!(
            "{}. {}\n",
            i + 1,
            e.highlighted(r.threshold).trim()
        ));
    }
    p.push_str(
        "\nWhat does the feature respond to? Reply with one short phrase, starting with \
         \"Explanation:\".",
    );
    p
}

/// Pulls the explanation out of a reply: the text after "Explanation:", else its first line.
pub fn parse_explanation(reply: &str) -> String {
    let lower = reply.to_lowercase();
    let body = match lower.find("explanation:") {
        Some(at) => &reply[at + "explanation:".len()..],
        None => reply,
    };
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.trim_matches(|c: char| c == '"' || c == '*' || c.is_whitespace());
    let short: String = line.chars().take(200).collect();
    if short.is_empty() {
        "(no explanation)".to_string()
    } else {
        short
    }
}

/// Asks the explainer about `r`.
pub fn explain(client: &Client, r: &Record) -> Result<String> {
    Ok(parse_explanation(&ask(client, explain_prompt(r), 48)?))
}

/// Reads a yes/no answer: `Some(true)` for yes/1/true, `Some(false)` for no/0/false.
pub fn parse_yes_no(reply: &str) -> Option<bool> {
    let w: String = reply
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    match w.as_str() {
        "yes" | "1" | "true" | "y" => Some(true),
        "no" | "0" | "false" | "n" => Some(false),
        _ => None,
    }
}

/// Reads the first integer 0..=10 of a reply.
pub fn parse_level(reply: &str) -> Option<f64> {
    let digits: String = reply
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse::<u32>()
        .ok()
        .filter(|&v| v <= 10)
        .map(f64::from)
}

/// Scores of one explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    /// Balanced accuracy telling activating from non-activating windows (P(yes) > 0.5).
    pub detection: f64,
    /// The same judgement as a ranking: AUROC of P(yes) (0.5 = chance; robust to a judge
    /// that leans to one answer).
    pub detection_auc: f64,
    /// Balanced accuracy telling correct highlights from random ones.
    pub fuzzing: f64,
    pub fuzzing_auc: f64,
    /// Pearson correlation of simulated (0-10) and true per-window activation.
    pub simulation: f64,
    /// Replies that could not be read (counted as "no" / 0).
    pub unparsed: usize,
    pub requests: usize,
}

/// `(TPR + TNR) / 2` of predictions against truths.
pub fn balanced_accuracy(pred: &[bool], truth: &[bool]) -> f64 {
    let rate = |want: bool| {
        let n = truth.iter().filter(|&&t| t == want).count();
        let hit = pred
            .iter()
            .zip(truth)
            .filter(|(&p, &t)| t == want && p == want)
            .count();
        if n == 0 {
            0.5
        } else {
            hit as f64 / n as f64
        }
    };
    (rate(true) + rate(false)) / 2.0
}

/// Area under the ROC curve of `score` for `truth` (ties count half); 0.5 without both classes.
pub fn auroc(score: &[f64], truth: &[bool]) -> f64 {
    let pos: Vec<f64> = score
        .iter()
        .zip(truth)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let neg: Vec<f64> = score
        .iter()
        .zip(truth)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let wins: f64 = pos
        .iter()
        .flat_map(|p| neg.iter().map(move |n| (p, n)))
        .map(|(p, n)| match p.partial_cmp(n) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum();
    wins / (pos.len() * neg.len()) as f64
}

/// Pearson correlation; 0 when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va <= 0.0 || vb <= 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// The same example with as many highlighted tokens as it truly has, placed at random.
fn fuzzed(e: &Example, threshold: f32, seed: u64) -> String {
    let n_true = e.acts.iter().filter(|&&a| a > threshold).count().max(1);
    let mut order: Vec<usize> = (0..e.tokens.len()).collect();
    order.shuffle(&mut rng(seed));
    let mut marks = vec![false; e.tokens.len()];
    for &i in order
        .iter()
        .filter(|&&i| e.acts[i] <= threshold)
        .take(n_true)
    {
        marks[i] = true;
    }
    mark(&e.tokens, &marks)
}

/// The judge's reply to `prompt` (one token) and its 20 most likely first tokens.
fn first_token(client: &Client, prompt: String) -> Result<(String, Vec<(String, f64)>)> {
    let msgs = [Message::new("system", SYSTEM), Message::new("user", prompt)];
    client
        .first_token_logprobs(&msgs, 20)
        .map_err(|e| SaeError::Config(format!("LLM request failed: {e}")))
}

/// A judge's yes/no answer as P(yes): from the first token's log-probabilities when the
/// endpoint returns them, else 1 or 0 from the reply's text; `None` when neither reads.
fn p_yes(client: &Client, prompt: String) -> Result<Option<f64>> {
    let (text, tops) = first_token(client, prompt)?;
    let (mut y, mut n) = (0.0, 0.0);
    for (t, lp) in &tops {
        match t.trim().to_lowercase().as_str() {
            "yes" => y += lp.exp(),
            "no" => n += lp.exp(),
            _ => {}
        }
    }
    if y + n > 0.0 {
        return Ok(Some(y / (y + n)));
    }
    Ok(parse_yes_no(&text).map(|b| if b { 1.0 } else { 0.0 }))
}

/// A 0-10 rating: the expected value over the digit tokens among the first token's top
/// log-probabilities (as OpenAI's simulator reads its predictions), else the reply's number.
fn level(client: &Client, prompt: String) -> Result<Option<f64>> {
    let (text, tops) = first_token(client, prompt)?;
    let (mut mass, mut sum) = (0.0, 0.0);
    for (t, lp) in &tops {
        if let Ok(v) = t.trim().parse::<u32>() {
            if v <= 10 {
                mass += lp.exp();
                sum += lp.exp() * f64::from(v);
            }
        }
    }
    if mass > 0.0 {
        return Ok(Some(sum / mass));
    }
    Ok(parse_level(&text))
}

/// Runs the three scorers on `r` with `explanation`.
pub fn score(client: &Client, r: &Record, explanation: &str, seed: u64) -> Result<Scores> {
    let head = format!("A feature of a language model responds to: {explanation}\n\n");
    let mut unparsed = 0;
    let mut requests = 0;
    let mut judge = |prompt: String| -> Result<f64> {
        requests += 1;
        let p = p_yes(client, prompt)?;
        unparsed += usize::from(p.is_none());
        Ok(p.unwrap_or(0.0))
    };
    // Detection: does the text contain it?
    let windows: Vec<(&Example, bool)> = r
        .activating
        .iter()
        .map(|e| (e, true))
        .chain(r.non_activating.iter().map(|e| (e, false)))
        .collect();
    let mut p = Vec::new();
    for (e, _) in &windows {
        p.push(judge(format!(
            "{head}Text: \"{}\"\n\nDoes this text contain what the feature responds to? Answer Yes or No.",
            e.tokens.concat().trim()
        ))?);
    }
    let truth: Vec<bool> = windows.iter().map(|w| w.1).collect();
    let decide = |p: &[f64]| p.iter().map(|&x| x > 0.5).collect::<Vec<_>>();
    let (detection, detection_auc) = (balanced_accuracy(&decide(&p), &truth), auroc(&p, &truth));
    // Fuzzing: are the highlights the right ones? Half true, half at random tokens.
    let (mut fp, mut ftruth) = (Vec::new(), Vec::new());
    for (i, e) in r.activating.iter().enumerate() {
        let correct = i % 2 == 0;
        let text = if correct {
            e.highlighted(r.threshold)
        } else {
            fuzzed(e, r.threshold, seed ^ i as u64)
        };
        fp.push(judge(format!(
            "{head}In the text below, some tokens are marked between << and >>.\n\nText: \"{}\"\n\nAre the marked tokens the ones the feature responds to? Answer Yes or No.",
            text.trim()
        ))?);
        ftruth.push(correct);
    }
    let (fuzzing, fuzzing_auc) = (
        balanced_accuracy(&decide(&fp), &ftruth),
        auroc(&fp, &ftruth),
    );
    // Simulation: how strongly, 0-10, against the window's true maximum.
    let (mut sim, mut real) = (Vec::new(), Vec::new());
    for (e, _) in &windows {
        requests += 1;
        let v = level(
            client,
            format!(
                "{head}Text: \"{}\"\n\nOn a scale from 0 (not at all) to 10 (very strongly), how strongly does this text contain what the feature responds to? Answer with one number.",
                e.tokens.concat().trim()
            ),
        )?;
        unparsed += usize::from(v.is_none());
        sim.push(v.unwrap_or(0.0));
        real.push(e.max().max(r.threshold) as f64);
    }
    Ok(Scores {
        detection,
        detection_auc,
        fuzzing,
        fuzzing_auc,
        simulation: pearson(&sim, &real),
        unparsed,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(
            parse_explanation("Sure!\nExplanation: \"names of US presidents\"\nMore."),
            "names of US presidents"
        );
        assert_eq!(
            parse_explanation("\n  the word 'the'  \n"),
            "the word 'the'"
        );
        assert_eq!(parse_explanation(""), "(no explanation)");
        assert_eq!(parse_yes_no(" Yes."), Some(true));
        assert_eq!(parse_yes_no("no, it does not"), Some(false));
        assert_eq!(parse_yes_no("1"), Some(true));
        assert_eq!(parse_yes_no("Maybe"), None);
        assert_eq!(parse_level("I'd say 7/10"), Some(7.0));
        assert_eq!(parse_level("42"), None);
        assert_eq!(parse_level("none"), None);
    }

    #[test]
    fn balanced_accuracy_and_correlation() {
        let truth = [true, true, true, false];
        assert_eq!(balanced_accuracy(&[true, true, true, true], &truth), 0.5);
        assert_eq!(balanced_accuracy(&truth, &truth), 1.0);
        assert_eq!(
            balanced_accuracy(&[true, false, false, false], &truth),
            (1.0 / 3.0 + 1.0) / 2.0
        );
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.9986).abs() < 1e-3);
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
        assert!((pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(
            auroc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
            1.0
        );
        assert_eq!(auroc(&[0.5, 0.5, 0.5], &[true, false, false]), 0.5);
        assert_eq!(
            auroc(&[0.1, 0.9, 0.95, 0.05], &[true, false, true, false]),
            0.75
        );
    }

    #[test]
    fn fuzzed_highlights_as_many_tokens_none_of_them_true() {
        let e = Example {
            tokens: (0..10).map(|i| format!(" w{i}")).collect(),
            acts: vec![0.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        };
        let s = fuzzed(&e, 0.0, 5);
        assert!(!s.contains("<<w2") && !s.contains("<<w3") && !s.contains("w2>>"));
        let inside: usize = s
            .split("<<")
            .skip(1)
            .map(|seg| seg.split(">>").next().unwrap().split_whitespace().count())
            .sum();
        assert_eq!(inside, 2, "{s}");
    }
}
