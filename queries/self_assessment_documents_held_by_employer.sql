-- title: Self-assessment respondents: Had their documents held by the employer, by nationality
-- dimensions: nationality, documents_held_by_employer
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: documents_held_by_employer
-- order: 43
SELECT nationality, documents_held_by_employer, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, documents_held_by_employer
