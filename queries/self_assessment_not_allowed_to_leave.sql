-- title: Self-assessment respondents: Were not allowed to leave their workplace, by nationality
-- dimensions: nationality, not_allowed_to_leave
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: not_allowed_to_leave
-- order: 42
SELECT nationality, not_allowed_to_leave, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, not_allowed_to_leave
