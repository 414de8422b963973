"""gbstats statistic constructors, returning trimtab statistics."""

from __future__ import annotations

from trimtab.experiments.stats import statistics as st


def SampleMeanStatistic(n: int = 0, sum: float = 0.0, sum_squares: float = 0.0) -> st.MeanStat:
    return st.MeanStat(n=n, sum=sum, sum_squares=sum_squares)


def ProportionStatistic(n: int = 0, sum: float = 0.0) -> st.ProportionStat:
    return st.ProportionStat(n=n, sum=sum)


def RatioStatistic(n, m_statistic, d_statistic, m_d_sum_of_products) -> st.RatioStat:
    return st.RatioStat(
        n=n, numerator=m_statistic, denominator=d_statistic, sum_products=m_d_sum_of_products
    )


def RegressionAdjustedStatistic(
    n, post_statistic, pre_statistic, post_pre_sum_of_products, theta
) -> st.CupedStat:
    return st.CupedStat(
        n=n,
        post=post_statistic,
        pre=pre_statistic,
        sum_products=post_pre_sum_of_products,
        theta=theta,
    )


def RegressionAdjustedRatioStatistic(
    n,
    m_statistic_post,
    d_statistic_post,
    m_statistic_pre,
    d_statistic_pre,
    m_post_m_pre_sum_of_products,
    d_post_d_pre_sum_of_products,
    m_pre_d_pre_sum_of_products,
    m_post_d_post_sum_of_products,
    m_post_d_pre_sum_of_products,
    m_pre_d_post_sum_of_products,
    theta,
) -> st.CupedRatioStat:
    return st.CupedRatioStat(
        n=n,
        m_post=m_statistic_post,
        d_post=d_statistic_post,
        m_pre=m_statistic_pre,
        d_pre=d_statistic_pre,
        m_post_m_pre=m_post_m_pre_sum_of_products,
        d_post_d_pre=d_post_d_pre_sum_of_products,
        m_pre_d_pre=m_pre_d_pre_sum_of_products,
        m_post_d_post=m_post_d_post_sum_of_products,
        m_post_d_pre=m_post_d_pre_sum_of_products,
        m_pre_d_post=m_pre_d_post_sum_of_products,
        theta=theta,
    )


def QuantileStatistic(
    n, n_star, nu, quantile_hat, quantile_lower, quantile_upper
) -> st.QuantileStat:
    return st.QuantileStat(
        n=n,
        n_star=n_star,
        nu=nu,
        quantile_hat=quantile_hat,
        quantile_lower=quantile_lower,
        quantile_upper=quantile_upper,
    )
