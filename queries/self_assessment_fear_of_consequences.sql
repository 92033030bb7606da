-- title: Self-assessment respondents: Feared negative consequences if they left their employment, by nationality
-- dimensions: nationality, fear_of_consequences
-- population: self-assessment respondents
-- counts: distinct respondents to the self-assessment in the window (anonymous responses count once each), by nationality and answer
-- percent: fear_of_consequences
-- order: 40
SELECT nationality, fear_of_consequences, count(*) AS count
FROM self_assessment_persons
GROUP BY nationality, fear_of_consequences
