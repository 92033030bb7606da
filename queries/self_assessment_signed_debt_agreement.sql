-- title: Self-assessment respondents: Signed a debt agreement, by nationality
-- dimensions: nationality, signed_debt_agreement
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: signed_debt_agreement
-- order: 41
SELECT nationality, signed_debt_agreement, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, signed_debt_agreement
