// Hierarchical one-compartment model with first-order absorption (pkpd's "one_cmt_oral"),
// for the side-by-side benchmark of issue 9 (b). Closed form, no ODE solver.
//
// Units as pkpd: time h, dose mg, cl L/h, v L, ka 1/h, concentration ng/mL.
//
//   subject i:  log cl_i ~ normal(log cl_pop, omega_cl)      (same for v and ka)
//   k_i = cl_i / v_i
//   C_i(t) = 1000 * ka_i / (v_i * (ka_i - k_i))
//            * sum over oral boluses d given at t_d <= t of amt_d * (exp(-k_i dt) - exp(-ka_i dt)),
//            dt = t - t_d
//   y ~ normal(C, sd),  sd = max(sigma_prop * |C|, 1e-6)           (proportional error)
//   y < LLOQ (BLQ): log P(Y < LLOQ) = normal_lcdf(LLOQ | C, sd)     (Beal's M3)
//
// The superposition is laid out by the harness (benchmarks/stan_side.py) as a list of
// (observation, dose) pairs with dt >= 0, grouped by observation: one vectorised pass over the
// pairs and a sparse sum (CSR matrix of ones) into the observations.
//
// Parameterisation of the subject effects (data switch `centered`, to match pkpd's choice):
// 0, non-centred: log cl_i = log cl_pop + omega_cl * z_i, z_i ~ N(0, 1), sampled in z;
// 1, centred: sampled in log cl_i itself. Both are written as one declaration with an affine
// transform (offset/multiplier), so the model block is the same for both. The 1e-6 floor and the M3
// term are those of pkpd/inference/likelihood.py. Priors are read from the same TOML file as
// pkpd (benchmarks/priors_one_cmt_oral_prop.toml) and passed in as data.
functions {
  // Concentrations (ng/mL) at every observation, for subject-level cl, v, ka.
  vector one_cmt_oral_conc(vector cl, vector v, vector ka, int n_obs,
                           data array[] int obs_subject, data array[] int pair_subject,
                           data vector pair_dt, data vector pair_amt,
                           data vector csr_w, data array[] int csr_v,
                           data array[] int csr_u) {
    int n_pairs = num_elements(pair_dt);
    vector[num_elements(cl)] k = cl ./ v;
    vector[n_pairs] k_p = k[pair_subject];
    vector[n_pairs] ka_p = ka[pair_subject];
    vector[n_pairs] unit = pair_amt .* (exp(-k_p .* pair_dt) - exp(-ka_p .* pair_dt));
    vector[num_elements(cl)] scale = 1000 * ka ./ (v .* (ka - k));
    return scale[obs_subject]
           .* csr_matrix_times_vector(n_obs, n_pairs, csr_w, csr_v, csr_u, unit);
  }
}
data {
  int<lower=1> n_subjects;
  int<lower=1> n_obs;
  array[n_obs] int<lower=1, upper=n_subjects> obs_subject;
  vector[n_obs] obs_y;                    // ng/mL (for BLQ rows: ignored)
  vector[n_obs] obs_lloq;                 // ng/mL (used on BLQ rows)
  array[n_obs] int<lower=0, upper=1> obs_blq;
  int<lower=0> n_pairs;                   // (observation, dose) pairs with t_obs >= t_dose
  array[n_pairs] int<lower=1, upper=n_subjects> pair_subject;
  vector<lower=0>[n_pairs] pair_dt;       // h since the dose
  vector<lower=0>[n_pairs] pair_amt;      // mg into the depot
  array[n_obs + 1] int<lower=1> pair_start;  // pairs of obs n: pair_start[n] .. pair_start[n+1]-1
  // priors (from the TOML file): lognormal(median, sd_log) on the typical values,
  // halfnormal(scale) on the between-subject SDs and on the proportional residual SD
  vector<lower=0>[3] prior_median;        // cl, v, ka
  vector<lower=0>[3] prior_sd_log;
  vector<lower=0>[3] prior_omega_scale;
  real<lower=0> prior_sigma_scale;
  int<lower=0, upper=1> centered;         // 1: centred subject effects, 0: non-centred
  int<lower=0, upper=1> emit_pred;        // 1: write the predictions (checks only)
}
transformed data {
  vector[3] prior_log_median = log(prior_median);
  vector[n_pairs] csr_w = rep_vector(1, n_pairs);
  array[n_pairs] int csr_v = linspaced_int_array(n_pairs, 1, n_pairs);
  int n_cens = sum(obs_blq);
  array[n_obs - n_cens] int idx_obs;
  array[n_cens] int idx_cens;
  {
    int a = 1;
    int b = 1;
    for (n in 1:n_obs) {
      if (obs_blq[n]) {
        idx_cens[b] = n;
        b += 1;
      } else {
        idx_obs[a] = n;
        a += 1;
      }
    }
  }
  vector[n_obs - n_cens] y_obs = obs_y[idx_obs];
  vector[n_cens] lloq_cens = obs_lloq[idx_cens];
}
parameters {
  real<offset=prior_log_median[1], multiplier=prior_sd_log[1]> log_cl_pop;
  real<offset=prior_log_median[2], multiplier=prior_sd_log[2]> log_v_pop;
  real<offset=prior_log_median[3], multiplier=prior_sd_log[3]> log_ka_pop;
  real<lower=0> omega_cl;
  real<lower=0> omega_v;
  real<lower=0> omega_ka;
  // log of the subject values (non-centred: sampled as (log cl_i - log cl_pop) / omega_cl)
  vector<offset=(centered ? 0 : log_cl_pop),
         multiplier=(centered ? 1 : omega_cl)>[n_subjects] log_cl;
  vector<offset=(centered ? 0 : log_v_pop),
         multiplier=(centered ? 1 : omega_v)>[n_subjects] log_v;
  vector<offset=(centered ? 0 : log_ka_pop),
         multiplier=(centered ? 1 : omega_ka)>[n_subjects] log_ka;
  real<lower=0> sigma_prop;
}
model {
  vector[n_obs] f = one_cmt_oral_conc(exp(log_cl), exp(log_v), exp(log_ka), n_obs, obs_subject,
                                      pair_subject, pair_dt, pair_amt, csr_w, csr_v,
                                      pair_start);
  vector[n_obs] sd = fmax(sigma_prop * abs(f), 1e-6);

  log_cl_pop ~ normal(prior_log_median[1], prior_sd_log[1]);
  log_v_pop ~ normal(prior_log_median[2], prior_sd_log[2]);
  log_ka_pop ~ normal(prior_log_median[3], prior_sd_log[3]);
  omega_cl ~ normal(0, prior_omega_scale[1]);
  omega_v ~ normal(0, prior_omega_scale[2]);
  omega_ka ~ normal(0, prior_omega_scale[3]);
  log_cl ~ normal(log_cl_pop, omega_cl);
  log_v ~ normal(log_v_pop, omega_v);
  log_ka ~ normal(log_ka_pop, omega_ka);
  sigma_prop ~ normal(0, prior_sigma_scale);

  y_obs ~ normal(f[idx_obs], sd[idx_obs]);
  if (n_cens > 0) {
    target += normal_lcdf(lloq_cens | f[idx_cens], sd[idx_cens]);
  }
}
generated quantities {
  real pop_cl = exp(log_cl_pop);
  real pop_v = exp(log_v_pop);
  real pop_ka = exp(log_ka_pop);
  vector[emit_pred ? n_obs : 0] pred;
  if (emit_pred) {
    pred = one_cmt_oral_conc(exp(log_cl), exp(log_v), exp(log_ka), n_obs, obs_subject,
                             pair_subject, pair_dt, pair_amt, csr_w, csr_v, pair_start);
  }
}
