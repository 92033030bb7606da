-- title: Self-assessment respondents: Worked excessive hours, by nationality
-- dimensions: nationality, excessive_hours
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: excessive_hours
-- order: 45
SELECT nationality, excessive_hours, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, excessive_hours
