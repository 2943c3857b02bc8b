"""The preference losses, as plain functions of sequence log-probabilities (one value per example).

Each returns (loss per example, reward of the first answer, reward of the second): the rewards are what the
loss pushes apart, logged as rewards/chosen, rewards/rejected, their margin and how often chosen wins.
The formulas are the papers' and TRL's; tuneforge's own tests check them against TRL's trainers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo(chosen, rejected, ref_chosen, ref_rejected, beta: float):
    """Direct Preference Optimization (sigmoid loss) on summed log-probabilities."""
    chosen_reward, rejected_reward = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward.detach(), rejected_reward.detach()


def simpo(chosen_mean, rejected_mean, beta: float, gamma: float):
    """SimPO on mean (length-normalised) log-probabilities, with a target margin gamma; no reference."""
    chosen_reward, rejected_reward = beta * chosen_mean, beta * rejected_mean
    return -F.logsigmoid(chosen_reward - rejected_reward - gamma), chosen_reward.detach(), rejected_reward.detach()


def orpo(chosen_mean, rejected_mean, chosen_nll, beta: float):
    """ORPO: the chosen answer's cross-entropy minus beta x log-sigmoid of the log odds ratio; no reference."""
    log_odds = (chosen_mean - rejected_mean) - (
        torch.log1p(-torch.exp(chosen_mean)) - torch.log1p(-torch.exp(rejected_mean))
    )
    return chosen_nll - beta * F.logsigmoid(log_odds), (beta * chosen_mean).detach(), (beta * rejected_mean).detach()


def kto(logps, ref_logps, kl, desirable, beta: float, desirable_weight: float, undesirable_weight: float):
    """KTO: each answer's log-ratio against the reference point kl (a detached estimate of the policy's KL)."""
    ratio = logps - ref_logps
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
        undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))),
    )
    reward = (beta * ratio).detach()
    return losses, torch.where(desirable, reward, torch.nan), torch.where(desirable, torch.nan, reward)
