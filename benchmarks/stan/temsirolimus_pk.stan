// pkpd's temsirolimus -> sirolimus PK model (both analytes), hierarchical, for the
// side-by-side benchmark of issue 9 (a). Closed form (sums of exponentials), no ODE solver.
// Equations: pkpd/models/temsirolimus.py. Units: time h, dose mg, volumes L, clearances L/h,
// concentrations ng/mL (whole blood).
//
//   temsirolimus (2 cmt, IV):  dA1/dt = input - (k10 + k12) A1 + k21 A2,  dA2/dt = k12 A1 - k21 A2
//                              k10 = cl/v1, k12 = q/v1, k21 = q/v2
//   sirolimus (1 cmt):         dAs/dt = fm k10 A1 (MW_sir/MW_tem) - ks As,  ks = cl_sir/v_sir
//   C_tem = 1000 A1/v1,  C_sir = 1000 As/v_sir
//
// Closed form (derived for this file). The poles of the temsirolimus system are
//   alpha, beta = (s +- sqrt(s^2 - 4 k10 k21)) / 2,  s = k10 + k12 + k21 (beta = k10 k21/alpha),
// and the amount in A1 after a unit bolus at u = 0 is
//   A1(u) = ca exp(-alpha u) + cb exp(-beta u),  ca = (alpha - k21)/(alpha - beta), cb = 1 - ca.
// Sirolimus is that input passed through exp(-ks u); convolving exp(-l u) with exp(-ks u) gives
// (exp(-l u) - exp(-ks u)) / (ks - l), so with g = fm k10 MW_sir/MW_tem
//   As(u) = da exp(-alpha u) + db exp(-beta u) + dk exp(-ks u),
//   da = g ca/(ks - alpha),  db = g cb/(ks - beta),  dk = -(da + db).
// An infusion of A mg over T h (rate A/T) started dt h before the sampling time turns each
// exp(-l u) into
//   E_l = A/(T l) * exp(-l max(dt - T, 0)) * (1 - exp(-l min(dt, T))),
// so C_tem = 1000/v1 (ca S_alpha + cb S_beta), C_sir = 1000/v_sir (da S_alpha + db S_beta
// + dk S_ks), with S_l the sum of E_l over the doses before the sampling time.
//
// Hierarchy (log scale): log theta_i ~ normal(log theta_pop, omega_theta) for cl, v1, v2,
// cl_sir, v_sir, sampled non-centred (in z_i = (log theta_i - log theta_pop)/omega_theta) or
// centred (in log theta_i) by the data switch `centered`, through an affine transform
// (offset/multiplier) on one declaration; q has no between-subject variability; fm is fixed
// (data). Proportional error per analyte with pkpd's 1e-6 floor on the SD, BLQ observations
// censored (M3), as in pkpd/inference/likelihood.py. Priors come from the TOML file pkpd reads too
// (benchmarks/priors_temsirolimus_pk.toml), passed in as data.
//
// Data layout (built by benchmarks/stan_side.py): sampling points = distinct (subject, time);
// (point, dose) pairs with t_point >= t_dose, grouped by point; observations refer to a point
// and an endpoint (1 temsirolimus, 2 sirolimus).
functions {
  // Sum over the pairs of each point of the infusion response of exp(-lambda u).
  vector infusion_sums(vector lambda_p, data vector pair_dt, data vector pair_dur,
                       data vector pair_amt, int n_points, data vector csr_w,
                       data array[] int csr_v, data array[] int csr_u) {
    int n_pairs = num_elements(pair_dt);
    vector[n_pairs] e = pair_amt ./ (pair_dur .* lambda_p)
                        .* exp(-lambda_p .* fdim(pair_dt, pair_dur))
                        .* -expm1(-lambda_p .* fmin(pair_dt, pair_dur));
    return csr_matrix_times_vector(n_points, n_pairs, csr_w, csr_v, csr_u, e);
  }

  // Temsirolimus and sirolimus concentrations (ng/mL) at every point: columns 1 and 2.
  matrix tem_sir_conc(vector cl, vector v1, vector q, vector v2, real fm, vector cl_sir,
                      vector v_sir, data array[] int point_subject,
                      data array[] int pair_subject, data vector pair_dt,
                      data vector pair_dur, data vector pair_amt, data vector csr_w,
                      data array[] int csr_v, data array[] int csr_u) {
    real mw_ratio = 914.2 / 1030.3;  // MW sirolimus / MW temsirolimus (g/mol)
    int n_points = num_elements(point_subject);
    vector[num_elements(cl)] k10 = cl ./ v1;
    vector[num_elements(cl)] k12 = q ./ v1;
    vector[num_elements(cl)] k21 = q ./ v2;
    vector[num_elements(cl)] s = k10 + k12 + k21;
    vector[num_elements(cl)] alpha = 0.5 * (s + sqrt(square(s) - 4 * k10 .* k21));
    vector[num_elements(cl)] beta = k10 .* k21 ./ alpha;
    vector[num_elements(cl)] ks = cl_sir ./ v_sir;
    vector[num_elements(cl)] ca = (alpha - k21) ./ (alpha - beta);
    vector[num_elements(cl)] cb = 1 - ca;
    vector[num_elements(cl)] g = fm * mw_ratio * k10;
    vector[num_elements(cl)] da = g .* ca ./ (ks - alpha);
    vector[num_elements(cl)] db = g .* cb ./ (ks - beta);
    vector[num_elements(cl)] dk = -(da + db);
    vector[n_points] s_alpha = infusion_sums(alpha[pair_subject], pair_dt, pair_dur, pair_amt,
                                             n_points, csr_w, csr_v, csr_u);
    vector[n_points] s_beta = infusion_sums(beta[pair_subject], pair_dt, pair_dur, pair_amt,
                                            n_points, csr_w, csr_v, csr_u);
    vector[n_points] s_ks = infusion_sums(ks[pair_subject], pair_dt, pair_dur, pair_amt,
                                          n_points, csr_w, csr_v, csr_u);
    array[n_points] int ps = point_subject;
    matrix[n_points, 2] conc;
    conc[ : , 1] = 1000 ./ v1[ps] .* (ca[ps] .* s_alpha + cb[ps] .* s_beta);
    conc[ : , 2] = 1000 ./ v_sir[ps]
                   .* (da[ps] .* s_alpha + db[ps] .* s_beta + dk[ps] .* s_ks);
    return conc;
  }
}
data {
  int<lower=1> n_subjects;
  int<lower=1> n_points;
  array[n_points] int<lower=1, upper=n_subjects> point_subject;
  int<lower=0> n_pairs;
  array[n_pairs] int<lower=1, upper=n_subjects> pair_subject;
  vector<lower=0>[n_pairs] pair_dt;       // h from the start of the infusion to the point
  vector<lower=0>[n_pairs] pair_dur;      // h, infusion duration (> 0)
  vector<lower=0>[n_pairs] pair_amt;      // mg of temsirolimus
  array[n_points + 1] int<lower=1> pair_start;  // CSR row pointers of the pairs by point
  int<lower=1> n_obs;
  array[n_obs] int<lower=1, upper=n_points> obs_point;
  array[n_obs] int<lower=1, upper=2> obs_endpoint;  // 1 temsirolimus, 2 sirolimus
  vector[n_obs] obs_y;                    // ng/mL (ignored on BLQ rows)
  vector[n_obs] obs_lloq;                 // ng/mL (used on BLQ rows)
  array[n_obs] int<lower=0, upper=1> obs_blq;
  // priors, order cl, v1, q, v2, cl_sir, v_sir: lognormal(median, sd_log) typical values;
  // halfnormal(scale) between-subject SDs, order cl, v1, v2, cl_sir, v_sir; residual SDs
  // halfnormal(scale), order temsirolimus, sirolimus
  vector<lower=0>[6] prior_median;
  vector<lower=0>[6] prior_sd_log;
  vector<lower=0>[5] prior_omega_scale;
  vector<lower=0>[2] prior_sigma_scale;
  real<lower=0, upper=1> fm;              // fixed
  int<lower=0, upper=1> centered;         // 1: centred subject effects, 0: non-centred
  int<lower=0, upper=1> emit_pred;        // 1: write the predictions (checks only)
}
transformed data {
  vector[6] m = log(prior_median);
  vector[n_pairs] csr_w = rep_vector(1, n_pairs);
  array[n_pairs] int csr_v = linspaced_int_array(n_pairs, 1, n_pairs);
  // observations split by endpoint and censoring: flat index into the [point, endpoint]
  // prediction matrix (column-major: point + n_points * (endpoint - 1))
  int n_cens = sum(obs_blq);
  array[n_obs - n_cens] int idx_obs;
  array[n_cens] int idx_cens;
  array[n_obs - n_cens] int ep_obs;
  array[n_cens] int ep_cens;
  {
    int a = 1;
    int b = 1;
    for (n in 1:n_obs) {
      if (obs_blq[n]) {
        idx_cens[b] = obs_point[n] + n_points * (obs_endpoint[n] - 1);
        ep_cens[b] = obs_endpoint[n];
        b += 1;
      } else {
        idx_obs[a] = obs_point[n] + n_points * (obs_endpoint[n] - 1);
        ep_obs[a] = obs_endpoint[n];
        a += 1;
      }
    }
  }
  vector[n_obs - n_cens] y_obs;
  vector[n_cens] lloq_cens;
  {
    int a = 1;
    int b = 1;
    for (n in 1:n_obs) {
      if (obs_blq[n]) {
        lloq_cens[b] = obs_lloq[n];
        b += 1;
      } else {
        y_obs[a] = obs_y[n];
        a += 1;
      }
    }
  }
}
parameters {
  real<offset=m[1], multiplier=prior_sd_log[1]> log_cl_pop;
  real<offset=m[2], multiplier=prior_sd_log[2]> log_v1_pop;
  real<offset=m[3], multiplier=prior_sd_log[3]> log_q_pop;
  real<offset=m[4], multiplier=prior_sd_log[4]> log_v2_pop;
  real<offset=m[5], multiplier=prior_sd_log[5]> log_cl_sir_pop;
  real<offset=m[6], multiplier=prior_sd_log[6]> log_v_sir_pop;
  real<lower=0> omega_cl;
  real<lower=0> omega_v1;
  real<lower=0> omega_v2;
  real<lower=0> omega_cl_sir;
  real<lower=0> omega_v_sir;
  vector<offset=(centered ? 0 : log_cl_pop),
         multiplier=(centered ? 1 : omega_cl)>[n_subjects] log_cl;
  vector<offset=(centered ? 0 : log_v1_pop),
         multiplier=(centered ? 1 : omega_v1)>[n_subjects] log_v1;
  vector<offset=(centered ? 0 : log_v2_pop),
         multiplier=(centered ? 1 : omega_v2)>[n_subjects] log_v2;
  vector<offset=(centered ? 0 : log_cl_sir_pop),
         multiplier=(centered ? 1 : omega_cl_sir)>[n_subjects] log_cl_sir;
  vector<offset=(centered ? 0 : log_v_sir_pop),
         multiplier=(centered ? 1 : omega_v_sir)>[n_subjects] log_v_sir;
  real<lower=0> sigma_prop_temsirolimus;
  real<lower=0> sigma_prop_sirolimus;
}
model {
  matrix[n_points, 2] conc = tem_sir_conc(exp(log_cl), exp(log_v1),
                                          rep_vector(exp(log_q_pop), n_subjects), exp(log_v2),
                                          fm, exp(log_cl_sir), exp(log_v_sir), point_subject,
                                          pair_subject, pair_dt, pair_dur, pair_amt, csr_w,
                                          csr_v, pair_start);
  vector[2] sigma = [sigma_prop_temsirolimus, sigma_prop_sirolimus]';
  vector[2 * n_points] f = to_vector(conc);
  vector[n_obs - n_cens] f_obs = f[idx_obs];
  vector[n_cens] f_cens = f[idx_cens];

  log_cl_pop ~ normal(m[1], prior_sd_log[1]);
  log_v1_pop ~ normal(m[2], prior_sd_log[2]);
  log_q_pop ~ normal(m[3], prior_sd_log[3]);
  log_v2_pop ~ normal(m[4], prior_sd_log[4]);
  log_cl_sir_pop ~ normal(m[5], prior_sd_log[5]);
  log_v_sir_pop ~ normal(m[6], prior_sd_log[6]);
  omega_cl ~ normal(0, prior_omega_scale[1]);
  omega_v1 ~ normal(0, prior_omega_scale[2]);
  omega_v2 ~ normal(0, prior_omega_scale[3]);
  omega_cl_sir ~ normal(0, prior_omega_scale[4]);
  omega_v_sir ~ normal(0, prior_omega_scale[5]);
  log_cl ~ normal(log_cl_pop, omega_cl);
  log_v1 ~ normal(log_v1_pop, omega_v1);
  log_v2 ~ normal(log_v2_pop, omega_v2);
  log_cl_sir ~ normal(log_cl_sir_pop, omega_cl_sir);
  log_v_sir ~ normal(log_v_sir_pop, omega_v_sir);
  sigma_prop_temsirolimus ~ normal(0, prior_sigma_scale[1]);
  sigma_prop_sirolimus ~ normal(0, prior_sigma_scale[2]);

  y_obs ~ normal(f_obs, fmax(sigma[ep_obs] .* abs(f_obs), 1e-6));
  if (n_cens > 0) {
    target += normal_lcdf(lloq_cens | f_cens, fmax(sigma[ep_cens] .* abs(f_cens), 1e-6));
  }
}
generated quantities {
  real pop_cl = exp(log_cl_pop);
  real pop_v1 = exp(log_v1_pop);
  real pop_q = exp(log_q_pop);
  real pop_v2 = exp(log_v2_pop);
  real pop_cl_sir = exp(log_cl_sir_pop);
  real pop_v_sir = exp(log_v_sir_pop);
  matrix[emit_pred ? n_points : 0, 2] pred;  // ng/mL: temsirolimus, sirolimus at each point
  if (emit_pred) {
    pred = tem_sir_conc(exp(log_cl), exp(log_v1), rep_vector(exp(log_q_pop), n_subjects),
                        exp(log_v2), fm, exp(log_cl_sir), exp(log_v_sir), point_subject,
                        pair_subject, pair_dt, pair_dur, pair_amt, csr_w, csr_v, pair_start);
  }
}
