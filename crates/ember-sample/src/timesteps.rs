//! Which of the T training timesteps a sampler visits: the spacings, and img2img's strength.
//! The caller works them out once and hands them to the sampler (as k-diffusion passes sigmas).

use ember_config::TimestepSpacing;
use ember_model::NoiseSchedule;

/// The timesteps of `steps` denoising steps under `spacing`, from the noisiest down, all
/// distinct (Karras spacing may give fewer than `steps`).
pub fn timesteps(schedule: &NoiseSchedule, steps: usize, spacing: TimestepSpacing) -> Vec<usize> {
    let t_max = schedule.len();
    let steps = steps.clamp(1, t_max);
    match spacing {
        TimestepSpacing::Trailing => (0..steps)
            .map(|i| (t_max * (steps - i)).div_ceil(steps) - 1)
            .collect(),
        TimestepSpacing::Leading => (0..steps).rev().map(|i| i * (t_max / steps)).collect(),
        TimestepSpacing::Linspace => {
            let mut ts: Vec<usize> = (0..steps)
                .map(|i| {
                    let f = if steps == 1 {
                        1.0
                    } else {
                        1.0 - i as f64 / (steps - 1) as f64
                    };
                    (f * (t_max - 1) as f64).round() as usize
                })
                .collect();
            ts.dedup();
            ts
        }
        TimestepSpacing::Karras => karras(schedule, steps),
    }
}

/// Karras et al. 2022's noise levels (eq. 5, rho = 7) between the schedule's smallest and
/// largest finite sigma, each snapped to the training timestep of the nearest noise level.
fn karras(schedule: &NoiseSchedule, steps: usize) -> Vec<usize> {
    let t_max = schedule.len();
    let rho = 7.0;
    // The largest finite noise level (a zero-terminal-SNR schedule's last is infinite).
    let top = (0..t_max)
        .rev()
        .find(|&t| schedule.sigma(Some(t)).is_finite())
        .expect("abar_0 > 0");
    let (lo, hi) = (schedule.sigma(Some(0)), schedule.sigma(Some(top)));
    let log_sigmas: Vec<f64> = (0..t_max).map(|t| schedule.sigma(Some(t)).ln()).collect();
    let mut ts: Vec<usize> = (0..steps)
        .map(|i| {
            let f = if steps == 1 {
                0.0
            } else {
                i as f64 / (steps - 1) as f64
            };
            let s = (hi.powf(1.0 / rho) + f * (lo.powf(1.0 / rho) - hi.powf(1.0 / rho))).powf(rho);
            let target = s.ln();
            (0..t_max)
                .min_by(|&a, &b| {
                    (log_sigmas[a] - target)
                        .abs()
                        .total_cmp(&(log_sigmas[b] - target).abs())
                })
                .expect("a non-empty schedule")
        })
        .collect();
    ts.dedup();
    ts
}

/// img2img: the last `strength` fraction of `timesteps` (at least one); the sampler starts
/// from the source image noised to the first of them.
pub fn strength_tail(timesteps: &[usize], strength: f64) -> Vec<usize> {
    let run = ((timesteps.len() as f64 * strength).round() as usize).clamp(1, timesteps.len());
    timesteps[timesteps.len() - run..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_config::DiffusionConfig;

    fn schedule() -> NoiseSchedule {
        NoiseSchedule::new(&DiffusionConfig::default())
    }

    #[test]
    fn spacings_descend_without_repeats_and_end_low() {
        let s = schedule();
        for spacing in [
            TimestepSpacing::Trailing,
            TimestepSpacing::Leading,
            TimestepSpacing::Linspace,
            TimestepSpacing::Karras,
        ] {
            let ts = timesteps(&s, 20, spacing);
            assert!(ts.windows(2).all(|w| w[0] > w[1]), "{spacing:?}: {ts:?}");
            assert!(ts.len() <= 20 && ts.len() >= 15, "{spacing:?}: {ts:?}");
            assert!(*ts.last().unwrap() <= 50, "{spacing:?}: {ts:?}");
        }
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Trailing),
            [999, 749, 499, 249]
        );
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Leading),
            [750, 500, 250, 0]
        );
        assert_eq!(
            timesteps(&s, 4, TimestepSpacing::Linspace),
            [999, 666, 333, 0]
        );
        let karras = timesteps(&s, 10, TimestepSpacing::Karras);
        assert_eq!((karras[0], *karras.last().unwrap()), (999, 0));
        // Karras spends more steps at low noise: its second-to-last step is far below the
        // second-to-last evenly spaced one (199 of 999).
        assert!(karras[karras.len() - 2] < 50, "{karras:?}");
    }

    #[test]
    fn trailing_visits_every_timestep_when_steps_equal_t() {
        let ten = NoiseSchedule::new(&DiffusionConfig {
            timesteps: 10,
            ..DiffusionConfig::default()
        });
        let all: Vec<usize> = (0..10).rev().collect();
        assert_eq!(timesteps(&ten, 10, TimestepSpacing::Trailing), all);
    }

    #[test]
    fn strength_runs_the_last_fraction_of_the_steps() {
        let all = timesteps(&schedule(), 10, TimestepSpacing::Trailing);
        assert_eq!(strength_tail(&all, 1.0), all);
        assert_eq!(strength_tail(&all, 0.6), all[4..]);
        assert_eq!(strength_tail(&all, 0.01), all[9..]);
    }
}
