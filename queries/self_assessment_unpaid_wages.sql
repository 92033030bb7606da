-- title: Self-assessment respondents: Had wages withheld or unpaid, by nationality
-- dimensions: nationality, unpaid_wages
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: unpaid_wages
-- order: 44
SELECT nationality, unpaid_wages, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, unpaid_wages
