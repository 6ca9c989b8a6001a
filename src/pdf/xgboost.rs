//! Evaluating an XGBoost model saved as JSON (`Booster.save_model("m.json")`, XGBoost 1.x–3.x)
//! for binary classification: no Python at run time.
//!
//! The arithmetic follows XGBoost's CPU predictor in f32: start from the base margin
//! (logit of `base_score`), add the leaf of every tree in order, apply the sigmoid. A split
//! sends a value left when `value < split_condition`, and a missing value (NaN) where
//! `default_left` says.

use anyhow::{bail, Context, Result};
use serde_json::Value;

struct Tree {
    left: Vec<i32>,
    right: Vec<i32>,
    feature: Vec<usize>,
    threshold: Vec<f32>,
    default_left: Vec<bool>,
}

impl Tree {
    fn leaf(&self, x: &[f32]) -> f32 {
        let mut node = 0usize;
        while self.left[node] >= 0 {
            let v = x.get(self.feature[node]).copied().unwrap_or(f32::NAN);
            let go_left = if v.is_nan() {
                self.default_left[node]
            } else {
                v < self.threshold[node]
            };
            node = if go_left { self.left[node] } else { self.right[node] } as usize;
        }
        self.threshold[node]
    }
}

pub struct XgbModel {
    trees: Vec<Tree>,
    base_margin: f32,
    /// The model's feature names, when it was trained with them.
    pub feature_names: Option<Vec<String>>,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        // XGBoost writes parameters as strings, and 3.x writes base_score as "[5E-1]".
        Value::String(s) => s.trim_matches(|c| c == '[' || c == ']').parse().ok(),
        Value::Array(a) if a.len() == 1 => number(&a[0]),
        _ => None,
    }
}

fn ints(v: &Value, key: &str) -> Result<Vec<i64>> {
    v[key]
        .as_array()
        .with_context(|| format!("tree has no {key}"))?
        .iter()
        .map(|x| {
            x.as_i64()
                .or_else(|| x.as_bool().map(i64::from))
                .with_context(|| format!("{key} holds a non-integer"))
        })
        .collect()
}

impl XgbModel {
    pub fn from_json(text: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(text).context("the XGBoost model is not valid JSON")?;
        let learner = &root["learner"];
        let objective = learner["objective"]["name"].as_str().unwrap_or("");
        if !matches!(objective, "binary:logistic" | "reg:logistic") {
            bail!("unsupported XGBoost objective {objective:?}: vellum evaluates binary:logistic models");
        }
        let booster = &learner["gradient_booster"];
        if booster["name"].as_str() != Some("gbtree") {
            bail!(
                "unsupported XGBoost booster {:?}: vellum evaluates gbtree models",
                booster["name"]
            );
        }
        let base_score =
            number(&learner["learner_model_param"]["base_score"]).context("the model has no base_score")? as f32;
        let trees = booster["model"]["trees"]
            .as_array()
            .context("the model has no trees")?
            .iter()
            .map(|t| -> Result<Tree> {
                let left = ints(t, "left_children")?;
                let n = left.len();
                let tree = Tree {
                    right: ints(t, "right_children")?.into_iter().map(|v| v as i32).collect(),
                    feature: ints(t, "split_indices")?.into_iter().map(|v| v as usize).collect(),
                    default_left: ints(t, "default_left")?.into_iter().map(|v| v != 0).collect(),
                    threshold: t["split_conditions"]
                        .as_array()
                        .context("tree has no split_conditions")?
                        .iter()
                        .map(|v| v.as_f64().map(|f| f as f32).context("split condition is not a number"))
                        .collect::<Result<_>>()?,
                    left: left.into_iter().map(|v| v as i32).collect(),
                };
                if [
                    tree.right.len(),
                    tree.feature.len(),
                    tree.default_left.len(),
                    tree.threshold.len(),
                ]
                .iter()
                .any(|&l| l != n)
                {
                    bail!("a tree's arrays have different lengths");
                }
                if tree.left.iter().chain(&tree.right).any(|&c| c >= n as i32) {
                    bail!("a tree refers to a node it does not have");
                }
                Ok(tree)
            })
            .collect::<Result<Vec<_>>>()?;
        let feature_names = learner["feature_names"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect());
        Ok(Self {
            trees,
            base_margin: -(1.0 / base_score - 1.0).ln(),
            feature_names,
        })
    }

    /// P(class 1) for one row of features (NaN = missing), as `predict_proba(...)[:, 1]`.
    pub fn predict(&self, x: &[f32]) -> f32 {
        let margin = self.trees.iter().fold(self.base_margin, |m, t| m + t.leaf(x));
        1.0 / (1.0 + (-margin).exp())
    }

    /// Orders named features as the model expects them (missing ones become NaN).
    pub fn arrange(&self, names: &[String], values: &[f32]) -> Vec<f32> {
        match &self.feature_names {
            None => values.to_vec(),
            Some(wanted) => wanted
                .iter()
                .map(|w| names.iter().position(|n| n == w).map(|i| values[i]).unwrap_or(f32::NAN))
                .collect(),
        }
    }
}
